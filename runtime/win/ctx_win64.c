/* win/ctx_win64.c - the context switch for the Win64 ABI.
 *
 * Win64 makes more registers callee-saved than System V: rdi, rsi and
 * xmm6-xmm15 besides rbx, rbp, r12-r15, and the MXCSR/x87 control words.
 * The thread's stack bounds live in its TIB (gs:0x08 StackBase, gs:0x10
 * StackLimit, gs:0x1478 DeallocationStack); the system reads them for stack
 * probes, guard pages and exception dispatch, so each context carries its
 * own and the switch swaps them too.
 *
 * Saved frame, from the saved stack pointer up (16-byte aligned):
 *   [sp+0]    xmm6 ... xmm15            (10 x 16 bytes)
 *   [sp+160]  MXCSR (low 32 bits), x87 control word (high 32 bits)
 *   [sp+168]  StackBase, StackLimit, DeallocationStack
 *   [sp+192]  padding
 *   [sp+200]  r15, r14, r13, r12, rsi, rdi, rbx, rbp
 *   [sp+264]  return address
 * A fresh context's frame returns into the trampoline with entry in r12
 * and its argument in r13; the trampoline gives the callee its 32-byte
 * shadow space and a 16-byte aligned call site.
 */
#if defined(_WIN64) && defined(__x86_64__)
#include <windows.h>
#include <stdint.h>
#include <string.h>

#include "runtime/ctx.h"

void hy__ctx_trampoline(void);

__asm__(".text\n"
        ".globl hy__ctx_switch\n"
        ".def hy__ctx_switch; .scl 2; .type 32; .endef\n"
        ".p2align 4\n"
        "hy__ctx_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %rdi\n"
        "  pushq %rsi\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $200, %rsp\n"
        "  movaps %xmm6, 0(%rsp)\n"
        "  movaps %xmm7, 16(%rsp)\n"
        "  movaps %xmm8, 32(%rsp)\n"
        "  movaps %xmm9, 48(%rsp)\n"
        "  movaps %xmm10, 64(%rsp)\n"
        "  movaps %xmm11, 80(%rsp)\n"
        "  movaps %xmm12, 96(%rsp)\n"
        "  movaps %xmm13, 112(%rsp)\n"
        "  movaps %xmm14, 128(%rsp)\n"
        "  movaps %xmm15, 144(%rsp)\n"
        "  stmxcsr 160(%rsp)\n"
        "  fnstcw 164(%rsp)\n"
        "  movq %gs:0x08, %rax\n"
        "  movq %rax, 168(%rsp)\n"
        "  movq %gs:0x10, %rax\n"
        "  movq %rax, 176(%rsp)\n"
        "  movq %gs:0x1478, %rax\n"
        "  movq %rax, 184(%rsp)\n"
        "  movq %rsp, (%rcx)\n"
        "  movq %rdx, %rsp\n"
        "  movq 168(%rsp), %rax\n"
        "  movq %rax, %gs:0x08\n"
        "  movq 176(%rsp), %rax\n"
        "  movq %rax, %gs:0x10\n"
        "  movq 184(%rsp), %rax\n"
        "  movq %rax, %gs:0x1478\n"
        "  ldmxcsr 160(%rsp)\n"
        "  fldcw 164(%rsp)\n"
        "  movaps 0(%rsp), %xmm6\n"
        "  movaps 16(%rsp), %xmm7\n"
        "  movaps 32(%rsp), %xmm8\n"
        "  movaps 48(%rsp), %xmm9\n"
        "  movaps 64(%rsp), %xmm10\n"
        "  movaps 80(%rsp), %xmm11\n"
        "  movaps 96(%rsp), %xmm12\n"
        "  movaps 112(%rsp), %xmm13\n"
        "  movaps 128(%rsp), %xmm14\n"
        "  movaps 144(%rsp), %xmm15\n"
        "  addq $200, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rsi\n"
        "  popq %rdi\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".globl hy__ctx_trampoline\n"
        ".def hy__ctx_trampoline; .scl 2; .type 32; .endef\n"
        ".p2align 4\n"
        "hy__ctx_trampoline:\n"
        "  movq %r13, %rcx\n"
        "  subq $32, %rsp\n"
        "  callq *%r12\n"
        "  ud2\n");

enum { FRAME = 272 }; /* 200 + 8 registers + the return address */

void *hy__ctx_make(void *base, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)base + size) & ~(uintptr_t)15;
  /* After the final ret the trampoline runs with rsp = top - 16: aligned,
   * so its call site is too. */
  uint64_t *sp = (uint64_t *)(top - 16 - FRAME);
  memset(sp, 0, FRAME);
  sp[20] = 0x1F80u | ((uint64_t)0x027Fu << 32); /* default MXCSR, x87 CW */
  sp[21] = (uint64_t)top;                       /* StackBase */
  sp[22] = (uint64_t)(uintptr_t)base;           /* StackLimit */
  /* DeallocationStack: the start of the reservation the stack lives in,
   * guard pages included (runtime/win/guard.c). */
  MEMORY_BASIC_INFORMATION mbi;
  uintptr_t low = (uintptr_t)base;
  if (VirtualQuery((char *)base - 1, &mbi, sizeof mbi) == sizeof mbi &&
      (uintptr_t)mbi.AllocationBase < low)
    low = (uintptr_t)mbi.AllocationBase;
  sp[23] = (uint64_t)low;
  sp[25] = 0;                                   /* r15 */
  sp[26] = 0;                                   /* r14 */
  sp[27] = (uint64_t)(uintptr_t)arg;            /* r13 */
  sp[28] = (uint64_t)(uintptr_t)entry;          /* r12 */
  sp[33] = (uint64_t)(uintptr_t)hy__ctx_trampoline;
  return sp;
}
#endif
