/* tests/arch/ctx_check.c - a standalone check of the context switch of one
 * CPU/ABI, built without the rest of the library so that it runs where the
 * library's dependencies are not installed (AArch64 under qemu-user):
 *
 *   aarch64-linux-gnu-gcc -O2 -static -I. tests/arch/ctx_check.c \
 *       runtime/linux/ctx_aarch64.c -o ctx_check && qemu-aarch64 ./ctx_check
 *
 * Two contexts ping-pong a million times.  Before every switch each side
 * loads its own pattern into every callee-saved register (integer and
 * floating point) and reads them all back after it is resumed: a register
 * the switch fails to save shows the other side's pattern.  New contexts
 * must start with a 16-byte aligned frame.  Prints "ctx_check ok" and exits
 * 0, or names what broke and exits 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime/ctx.h"

#define ROUNDS 1000000

#if defined(__aarch64__)
#define NREGS 18 /* x19..x28, d8..d15 */
static void switch_checked(void **from, void *to, uint64_t tag, uint64_t *out) {
  register void **a0 __asm__("x0") = from;
  register void *a1 __asm__("x1") = to;
  register uint64_t t __asm__("x9") = tag;
  register uint64_t *o __asm__("x10") = out;
  __asm__ volatile(
      "mov x19, x9\n add x20, x9, #1\n add x21, x9, #2\n add x22, x9, #3\n"
      "add x23, x9, #4\n add x24, x9, #5\n add x25, x9, #6\n add x26, x9, #7\n"
      "add x27, x9, #8\n add x28, x9, #9\n"
      "add x11, x9, #10\n fmov d8, x11\n add x11, x9, #11\n fmov d9, x11\n"
      "add x11, x9, #12\n fmov d10, x11\n add x11, x9, #13\n fmov d11, x11\n"
      "add x11, x9, #14\n fmov d12, x11\n add x11, x9, #15\n fmov d13, x11\n"
      "add x11, x9, #16\n fmov d14, x11\n add x11, x9, #17\n fmov d15, x11\n"
      "str x10, [sp, #-16]!\n"
      "bl hy__ctx_switch\n"
      "ldr x10, [sp], #16\n"
      "stp x19, x20, [x10, #0]\n stp x21, x22, [x10, #16]\n"
      "stp x23, x24, [x10, #32]\n stp x25, x26, [x10, #48]\n"
      "stp x27, x28, [x10, #64]\n"
      "stp d8, d9, [x10, #80]\n stp d10, d11, [x10, #96]\n"
      "stp d12, d13, [x10, #112]\n stp d14, d15, [x10, #128]\n"
      : "+r"(a0), "+r"(a1), "+r"(t), "+r"(o)
      :
      : "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x11", "x12", "x13", "x14",
        "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24",
        "x25", "x26", "x27", "x28", "x30", "v0", "v1", "v2", "v3", "v4", "v5",
        "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15",
        "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25",
        "v26", "v27", "v28", "v29", "v30", "v31", "memory", "cc");
}
#elif defined(__x86_64__)
#define NREGS 5 /* rbx, r12..r15 (rbp is the frame pointer here) */
static void switch_checked(void **from, void *to, uint64_t tag, uint64_t *out) {
  uint64_t t = tag; /* rdx: the call clobbers it, so it is an output too */
  __asm__ volatile(
      "movq %[t], %%rbx\n leaq 1(%[t]), %%r12\n leaq 2(%[t]), %%r13\n"
      "leaq 3(%[t]), %%r14\n leaq 4(%[t]), %%r15\n"
      "movq %%rsp, %%rax\n subq $128, %%rsp\n andq $-16, %%rsp\n"
      "pushq %%rax\n pushq %[o]\n"
      "call hy__ctx_switch\n"
      "popq %[o]\n popq %%rsp\n"
      "movq %%rbx, 0(%[o])\n movq %%r12, 8(%[o])\n movq %%r13, 16(%[o])\n"
      "movq %%r14, 24(%[o])\n movq %%r15, 32(%[o])\n"
      : "+D"(from), "+S"(to), [o] "+c"(out), [t] "+d"(t)
      :
      : "rax", "r8", "r9", "r10", "r11", "rbx", "r12", "r13", "r14", "r15",
        "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
        "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
        "memory", "cc");
}
#else
#error "no context switch check for this CPU"
#endif

static void *main_sp, *co_sp;
static long co_round;
static int failed;

static void check(const char *who, const uint64_t *got, uint64_t tag, long round) {
  for (int i = 0; i < NREGS; i++)
    if (got[i] != tag + (uint64_t)i && !failed) {
      fprintf(stderr, "ctx_check: %s: callee-saved register %d lost at round %ld"
              " (0x%llx, expected 0x%llx)\n", who, i, round,
              (unsigned long long)got[i], (unsigned long long)(tag + (uint64_t)i));
      failed = 1;
    }
}

static void co_entry(void *arg) {
  uint64_t tag = (uint64_t)(uintptr_t)arg, got[NREGS];
  if (((uintptr_t)__builtin_frame_address(0) & 15) != 0) {
    fprintf(stderr, "ctx_check: new context's frame is not 16-byte aligned\n");
    failed = 1;
  }
  for (long i = 0; i < ROUNDS; i++) {
    co_round = i;
    switch_checked(&co_sp, main_sp, tag, got);
    check("coroutine", got, tag, i);
  }
  co_round = ROUNDS;
  hy__ctx_switch(&co_sp, main_sp);
  abort(); /* never resumed */
}

int main(void) {
  size_t size = 64 * 1024;
  char *stack = malloc(size);
  if (!stack)
    return 1;
  co_sp = hy__ctx_make(stack, size, co_entry, (void *)(uintptr_t)0x5500000000ull);
  uint64_t tag = 0x7700000000ull, got[NREGS];
  for (long i = 0; i <= ROUNDS; i++) {
    switch_checked(&main_sp, co_sp, tag, got);
    check("caller", got, tag, i);
    if (co_round != i && !failed) {
      fprintf(stderr, "ctx_check: resumed out of order at round %ld\n", i);
      failed = 1;
    }
  }
  free(stack);
  if (failed)
    return 1;
  printf("ctx_check ok: %d round trips\n", ROUNDS);
  return 0;
}
