/* win/signal.c - OS signals as events on Windows: not provided yet (the
 * equivalent is console control events, SetConsoleCtrlHandler).  Every
 * call fails cleanly. */
#include <string.h>

#include "hydra/error.h"
#include "runtime/hubs.h"

int hy_signal_subscribe(hy_runtime_t *rt, const int *signos, int n,
                        hy_sigrecv_t **out) {
  (void)rt, (void)signos, (void)n;
  if (out)
    *out = NULL;
  return HY_ENOSYS;
}
int hy_signal_unsubscribe(hy_sigrecv_t *r) {
  (void)r;
  return HY_EINVAL;
}
int hy_signal_read(hy_sigrecv_t *r, int *signo) {
  (void)r, (void)signo;
  return HY_EINVAL;
}
int hy_signal_read_until(hy_sigrecv_t *r, hy_time_t deadline, int *signo) {
  (void)r, (void)deadline, (void)signo;
  return HY_EINVAL;
}
int hy_signal_pending(hy_sigrecv_t *r) {
  (void)r;
  return HY_EINVAL;
}
hy_arm_t hy_arm_signal(hy_sigrecv_t *r, int *signo) {
  hy_arm_t a;
  memset(&a, 0, sizeof a);
  (void)r, (void)signo;
  return a; /* ops NULL, guard 0: a disabled arm */
}
const char *hy_signal_name(int signo) {
  (void)signo;
  return "signal";
}
void hy__signal_runtime_free(hy_runtime_t *rt) { (void)rt; }
