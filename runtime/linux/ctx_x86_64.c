/* linux/ctx_x86_64.c - the context switch for x86-64 System V.
 *
 * Saved frame, from the saved stack pointer up:
 *   [sp+0]  MXCSR (low 32 bits) and x87 control word (high 32 bits)
 *   [sp+8]  r15, r14, r13, r12, rbx, rbp
 *   [sp+56] return address
 * A fresh context's frame holds the trampoline as return address, with
 * entry in r12 and its argument in r13; the frame is placed so that the
 * trampoline starts with rsp 16-byte aligned, as a call site would have it.
 */
#if defined(__x86_64__) && !defined(_WIN32)
#include <stdint.h>

#include "runtime/ctx.h"

void hy__ctx_trampoline(void);

__asm__(".text\n"
        ".globl hy__ctx_switch\n"
        ".type hy__ctx_switch,@function\n"
        "hy__ctx_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 4(%rsp)\n"
        "  addq $8, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size hy__ctx_switch, .-hy__ctx_switch\n"
        ".globl hy__ctx_trampoline\n"
        ".type hy__ctx_trampoline,@function\n"
        "hy__ctx_trampoline:\n"
        "  movq %r13, %rdi\n"
        "  callq *%r12\n"
        "  ud2\n"
        ".size hy__ctx_trampoline, .-hy__ctx_trampoline\n");

void *hy__ctx_make(void *base, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)base + size) & ~(uintptr_t)15;
  uint64_t *sp = (uint64_t *)(top - 64);
  sp[0] = 0x1F80u | ((uint64_t)0x037Fu << 32); /* default MXCSR, x87 CW */
  sp[1] = 0;                                   /* r15 */
  sp[2] = 0;                                   /* r14 */
  sp[3] = (uint64_t)(uintptr_t)arg;            /* r13 */
  sp[4] = (uint64_t)(uintptr_t)entry;          /* r12 */
  sp[5] = 0;                                   /* rbx */
  sp[6] = 0;                                   /* rbp */
  sp[7] = (uint64_t)(uintptr_t)hy__ctx_trampoline;
  return sp;
}
#endif
