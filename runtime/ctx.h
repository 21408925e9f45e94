/* runtime/ctx.h - switching between stacks.
 *
 * A context is just a saved stack pointer: hy__ctx_switch pushes the
 * callee-saved registers (and the FP control words) on the current stack,
 * stores the stack pointer in *from, loads `to` and pops the other side's
 * registers.  One assembly routine per CPU/ABI (runtime/linux/ctx_x86_64.c
 * for System V x86-64, runtime/linux/ctx_aarch64.c for AArch64,
 * runtime/win/ctx_win64.c for Win64); tests/arch/ctx_check.c checks each
 * on its own (AArch64 under qemu-user).  ucontext is
 * never used: it makes a system call per switch to save the signal mask.
 *
 * A new context starts in hy__ctx_make's entry(arg) on the given stack;
 * entry must never return (it switches away for good).
 */
#ifndef HYDRA_RUNTIME_CTX_H
#define HYDRA_RUNTIME_CTX_H

#include <stddef.h>

void hy__ctx_switch(void **from_sp, void *to_sp);

/* Returns the initial stack pointer for a context that will run
 * entry(arg) on the stack [base, base + size). */
void *hy__ctx_make(void *base, size_t size, void (*entry)(void *), void *arg);

#endif
