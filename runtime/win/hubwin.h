/* runtime/win/hubwin.h - between seed 000's Win32 layer (hub_api.c: the
 * hubs of this process and their consumers) and its reach to other
 * processes (hub_pipe.c: a named pipe per hub that hands consumers' events
 * to other processes, and the client side of it).
 */
#ifndef HYDRA_RUNTIME_WIN_HUBWIN_H
#define HYDRA_RUNTIME_WIN_HUBWIN_H

#ifdef _WIN32
#include <windows.h>

#include "hydra/hub_win.h"

typedef struct hy__hubpipe hy__hubpipe;

/* Starts serving the hub e under its name to other processes: a pipe
 * \\.\pipe\hydra-hub\<name> and a thread that answers connects with
 * hy__hubwin_connect_for.  Returns 0, or a Win32 error:
 * ERROR_ALREADY_EXISTS if another process serves that name. */
DWORD hy__hubpipe_start(LPCWSTR name, HHEVENT e, hy__hubpipe **out);

/* Stops serving and joins the thread; a connect under way is answered
 * first or refused.  pre: the layer's lock is not held (the thread may be
 * waiting for it). */
void hy__hubpipe_stop(hy__hubpipe *p);

/* Connects to the hub called name in another process: the consumer's
 * event, duplicated into this process with access and inherit; or NULL
 * and SetLastError (ERROR_FILE_NOT_FOUND if no process serves it). */
HANDLE hy__hubpipe_connect(LPCWSTR name, DWORD access, BOOL inherit);

/* hub_api.c, for the server thread: connects a consumer to e (if e is
 * still a live hub) and duplicates its event into process.  Returns the
 * handle value in that process, or NULL with *err set. */
HANDLE hy__hubwin_connect_for(HHEVENT e, HANDLE process, DWORD access,
                              BOOL inherit, DWORD *err);
#endif
#endif
