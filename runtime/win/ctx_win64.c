/* win/ctx_win64.c - the context switch for the Win64 ABI.
 *
 * Win64 makes more registers callee-saved than System V: rdi, rsi and
 * xmm6-xmm15 besides rbx, rbp, r12-r15.  The thread's stack bounds live in
 * its TIB (gs:0x08 StackBase, gs:0x10 StackLimit, gs:0x1478
 * DeallocationStack); the system reads them for stack probes, guard pages
 * and exception dispatch, so each context carries its own and the switch
 * swaps them too.
 *
 * The MXCSR control bits and the x87 control word are nonvolatile in Win64
 * as in System V, and as there they are not switched: they belong to the
 * worker thread, which every task on it shares (the contract in
 * hydra/runtime.h: a task that changes them restores them before it can
 * switch out).  A task that keeps it finds them, after every switch, as
 * it left them, so each function still sees what the ABI promises across
 * its calls; the system (exception dispatch, the unwinder) never reads
 * them from a context's frame.
 *
 * Saved frame, from the saved stack pointer up (16-byte aligned):
 *   [sp+0]    xmm6 ... xmm15            (10 x 16 bytes)
 *   [sp+160]  StackBase, StackLimit, DeallocationStack
 *   [sp+184]  r15, r14, r13, r12, rsi, rdi, rbx, rbp
 *   [sp+248]  return address
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
        "  subq $184, %rsp\n"
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
        "  movq %gs:0x08, %rax\n"
        "  movq %rax, 160(%rsp)\n"
        "  movq %gs:0x10, %rax\n"
        "  movq %rax, 168(%rsp)\n"
        "  movq %gs:0x1478, %rax\n"
        "  movq %rax, 176(%rsp)\n"
        "  movq %rsp, (%rcx)\n"
        "  movq %rdx, %rsp\n"
        "  movq 160(%rsp), %rax\n"
        "  movq %rax, %gs:0x08\n"
        "  movq 168(%rsp), %rax\n"
        "  movq %rax, %gs:0x10\n"
        "  movq 176(%rsp), %rax\n"
        "  movq %rax, %gs:0x1478\n"
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
        "  addq $184, %rsp\n"
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

enum { FRAME = 256 }; /* 184 + 8 registers + the return address */

void *hy__ctx_make(void *base, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)base + size) & ~(uintptr_t)15;
  /* After the final ret the trampoline runs with rsp = top - 16: aligned,
   * so its call site is too. */
  uint64_t *sp = (uint64_t *)(top - 16 - FRAME);
  memset(sp, 0, FRAME);
  sp[20] = (uint64_t)top;                       /* StackBase */
  sp[21] = (uint64_t)(uintptr_t)base;           /* StackLimit */
  /* DeallocationStack: the start of the reservation the stack lives in,
   * guard pages included (runtime/win/guard.c). */
  MEMORY_BASIC_INFORMATION mbi;
  uintptr_t low = (uintptr_t)base;
  if (VirtualQuery((char *)base - 1, &mbi, sizeof mbi) == sizeof mbi &&
      (uintptr_t)mbi.AllocationBase < low)
    low = (uintptr_t)mbi.AllocationBase;
  sp[22] = (uint64_t)low;
  sp[23] = 0;                                   /* r15 */
  sp[24] = 0;                                   /* r14 */
  sp[25] = (uint64_t)(uintptr_t)arg;            /* r13 */
  sp[26] = (uint64_t)(uintptr_t)entry;          /* r12 */
  sp[31] = (uint64_t)(uintptr_t)hy__ctx_trampoline;
  return sp;
}

void hy__ctx_fp_save(uint64_t *fp) {
  uint32_t mxcsr;
  uint16_t cw;
  __asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(cw));
  *fp = mxcsr | (uint64_t)cw << 32;
}

void hy__ctx_fp_load(const uint64_t *fp) {
  uint32_t mxcsr = (uint32_t)*fp;
  uint16_t cw = (uint16_t)(*fp >> 32);
  __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(cw));
}

void hy__ctx_fp_default(void) {
  /* Round to nearest, every exception masked; x87: 53-bit precision, the
   * Windows default. */
  uint32_t mxcsr = 0x1F80u;
  uint16_t cw = 0x027Fu;
  __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(cw));
}
#endif
