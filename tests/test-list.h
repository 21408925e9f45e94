/* test-list.h - every test, one line each, grouped by area.
 *
 * Each area keeps its own list file so that work on one area does not touch
 * the others' lines.  A line is TEST(name, flags) with flags from test.h.
 */
#include "list-foundation.h"
#include "list-alloc.h"
#include "list-runtime.h"
#include "list-port.h"
#include "list-hub.h"
#include "list-chan.h"
#include "list-event.h"
#include "list-nomem.h"
#include "list-net.h"
#include "list-examples.h"
#include "list-win.h"
