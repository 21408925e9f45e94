/* runtime/ctx.h - switching between stacks.
 *
 * A context is just a saved stack pointer: hy__ctx_switch pushes the
 * callee-saved registers on the current stack,
 * stores the stack pointer in *from, loads `to` and pops the other side's
 * registers.  One assembly routine per CPU/ABI (runtime/linux/ctx_x86_64.c
 * for System V x86-64, runtime/linux/ctx_aarch64.c for AArch64,
 * runtime/win/ctx_win64.c for Win64); tests/arch/ctx_check.c checks each
 * on its own (AArch64 under qemu-user).  ucontext is
 * never used: it makes a system call per switch to save the signal mask.
 *
 * A new context starts in hy__ctx_make's entry(arg) on the given stack;
 * entry must never return (it switches away for good).
 *
 * The floating-point control state (x86: the MXCSR control bits and the
 * x87 control word; AArch64: FPCR) is not switched: contexts on one thread
 * share the thread's, as goroutines share their M's.  The ABIs make it
 * callee-saved, and a switch still keeps that promise to every task that
 * restores what it changed before it can switch out (hydra/runtime.h):
 * all of them then switch with the same state.  Saving it cost a sixth of
 * an x86-64 switch (stmxcsr and ldmxcsr are slow instructions).  A task
 * that asked for a state of its own (hy_task_own_fp) has it saved and put
 * back around its switches by the scheduler (sched.c: leave).
 */
#ifndef HYDRA_RUNTIME_CTX_H
#define HYDRA_RUNTIME_CTX_H

#include <stddef.h>
#include <stdint.h>

void hy__ctx_switch(void **from_sp, void *to_sp);

/* Returns the initial stack pointer for a context that will run
 * entry(arg) on the stack [base, base + size). */
void *hy__ctx_make(void *base, size_t size, void (*entry)(void *), void *arg);

/* Sets the calling thread's floating-point control state to the
 * platform's default (round to nearest, exceptions masked), which workers
 * start with, and so every task. */
void hy__ctx_fp_default(void);

/* Saves / loads the calling thread's floating-point control state (for a
 * task that keeps its own: hy_task_own_fp). */
void hy__ctx_fp_save(uint64_t *fp);
void hy__ctx_fp_load(const uint64_t *fp);

#endif
