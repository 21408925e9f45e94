/* runtime/win/win.h - what the Windows backend files share: the edge where
 * GetLastError and WSAGetLastError codes become HY_E* (win_error.c). */
#ifndef HYDRA_RUNTIME_WIN_H
#define HYDRA_RUNTIME_WIN_H

#include <stdint.h>

/* Translates a Win32 error (GetLastError) or a Winsock error
 * (WSAGetLastError; the two code spaces do not overlap) to HY_E*.  0 stays
 * 0; anything unknown is HY_EUNKNOWN. */
int hy__win_error(unsigned long code);

/* The same for the calling thread's last error. */
int hy__win_last_error(void);
int hy__wsa_last_error(void);

#endif
