/* win/evfd.c - a hub consumer's OS handle on Windows: not provided yet.
 * An auto-reset event HANDLE fits "a wait takes the release", but it
 * cannot be polled without taking it nor made ready for good once the hub
 * is destroyed; hy_hub_os_handle returns HY_ENOSYS until that is designed
 * (tasks and threads can still wait with hy_hub_wait). */
#include <stdint.h>

#include "hydra/error.h"
#include "runtime/hubs.h"

int hy__evfd_open(intptr_t *h) {
  *h = -1;
  return HY_ENOSYS;
}
void hy__evfd_close(intptr_t h) { (void)h; }
void hy__evfd_post(intptr_t h) { (void)h; }
int hy__evfd_take(intptr_t h) {
  (void)h;
  return 0;
}
int hy__evfd_ready(intptr_t h) {
  (void)h;
  return 0;
}
void hy__evfd_post_forever(intptr_t h) { (void)h; }
