/* linux/ctx_x86_64.c - the context switch for x86-64 System V.
 *
 * Saved frame, from the saved stack pointer up:
 *   [sp+0]  r15, r14, r13, r12, rbx, rbp
 *   [sp+48] return address
 * A fresh context's frame holds the trampoline as return address, with
 * entry in r12 and its argument in r13; the frame is placed so that the
 * trampoline starts with rsp 16-byte aligned, as a call site would have it.
 *
 * The MXCSR and the x87 control word are not switched: they belong to the
 * worker thread, which every task on it shares (runtime/ctx.h, and the
 * contract in hydra/runtime.h).  Saving them was a sixth of a switch here:
 * stmxcsr and ldmxcsr cost about 4 ns each on the AMD EPYC we measure on,
 * against 6 ns for a whole uncontended lock and unlock.
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
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
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
  /* After the final ret the trampoline runs with rsp = top: aligned as
   * just before a call. */
  uint64_t *sp = (uint64_t *)(top - 56);
  sp[0] = 0;                        /* r15 */
  sp[1] = 0;                        /* r14 */
  sp[2] = (uint64_t)(uintptr_t)arg; /* r13 */
  sp[3] = (uint64_t)(uintptr_t)entry; /* r12 */
  sp[4] = 0;                        /* rbx */
  sp[5] = 0;                        /* rbp */
  sp[6] = (uint64_t)(uintptr_t)hy__ctx_trampoline;
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
  /* Round to nearest, every exception masked; x87: extended precision,
   * the System V default. */
  uint32_t mxcsr = 0x1F80u;
  uint16_t cw = 0x037Fu;
  __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(cw));
}
#endif
