/* linux/ctx_aarch64.c - the context switch for AArch64 (AAPCS64).
 *
 * Saved frame, 160 bytes from the saved stack pointer up:
 *   [sp+0]   d8..d15 (the low halves of v8..v15, callee-saved)
 *   [sp+64]  x19..x28
 *   [sp+144] x29 (frame pointer), x30 (link register: where to resume)
 * A fresh context's frame holds the trampoline in x30, entry in x19 and
 * its argument in x20.  The stack pointer stays 16-byte aligned throughout.
 * FPCR is not switched: it belongs to the worker thread (runtime/ctx.h).
 */
#if defined(__aarch64__) && !defined(_WIN32)
#include <stdint.h>

#include "runtime/ctx.h"

void hy__ctx_trampoline(void);

__asm__(".text\n"
        ".globl hy__ctx_switch\n"
        ".type hy__ctx_switch,%function\n"
        "hy__ctx_switch:\n"
        "  sub sp, sp, #160\n"
        "  stp d8, d9, [sp, #0]\n"
        "  stp d10, d11, [sp, #16]\n"
        "  stp d12, d13, [sp, #32]\n"
        "  stp d14, d15, [sp, #48]\n"
        "  stp x19, x20, [sp, #64]\n"
        "  stp x21, x22, [sp, #80]\n"
        "  stp x23, x24, [sp, #96]\n"
        "  stp x25, x26, [sp, #112]\n"
        "  stp x27, x28, [sp, #128]\n"
        "  stp x29, x30, [sp, #144]\n"
        "  mov x2, sp\n"
        "  str x2, [x0]\n"
        "  mov sp, x1\n"
        "  ldp d8, d9, [sp, #0]\n"
        "  ldp d10, d11, [sp, #16]\n"
        "  ldp d12, d13, [sp, #32]\n"
        "  ldp d14, d15, [sp, #48]\n"
        "  ldp x19, x20, [sp, #64]\n"
        "  ldp x21, x22, [sp, #80]\n"
        "  ldp x23, x24, [sp, #96]\n"
        "  ldp x25, x26, [sp, #112]\n"
        "  ldp x27, x28, [sp, #128]\n"
        "  ldp x29, x30, [sp, #144]\n"
        "  add sp, sp, #160\n"
        "  ret\n"
        ".size hy__ctx_switch, .-hy__ctx_switch\n"
        ".globl hy__ctx_trampoline\n"
        ".type hy__ctx_trampoline,%function\n"
        "hy__ctx_trampoline:\n"
        "  mov x0, x20\n"
        "  blr x19\n"
        "  brk #0\n"
        ".size hy__ctx_trampoline, .-hy__ctx_trampoline\n");

void *hy__ctx_make(void *base, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)base + size) & ~(uintptr_t)15;
  uint64_t *sp = (uint64_t *)(top - 160);
  for (int i = 0; i < 20; i++)
    sp[i] = 0;
  sp[8] = (uint64_t)(uintptr_t)entry;               /* x19 */
  sp[9] = (uint64_t)(uintptr_t)arg;                 /* x20 */
  sp[19] = (uint64_t)(uintptr_t)hy__ctx_trampoline; /* x30 */
  return sp;
}

void hy__ctx_fp_save(uint64_t *fp) {
  uint64_t v;
  __asm__ volatile("mrs %0, fpcr" : "=r"(v));
  *fp = v;
}

void hy__ctx_fp_load(const uint64_t *fp) {
  __asm__ volatile("msr fpcr, %0" : : "r"(*fp));
}

void hy__ctx_fp_default(void) {
  /* Round to nearest, no traps, no flush to zero. */
  __asm__ volatile("msr fpcr, xzr");
}
#endif
