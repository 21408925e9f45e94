/* win/win_error.c - GetLastError and WSAGetLastError codes to HY_E*: the
 * Windows twin of hy_translate_errno, and the only place either code space
 * is read. */
#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>

#include "hydra/error.h"
#include "runtime/win/win.h"

int hy__win_error(unsigned long code) {
  switch (code) {
  case 0: return 0;
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
  case ERROR_COMMITMENT_LIMIT: return HY_ENOMEM; /* = WSA_NOT_ENOUGH_MEMORY */
  case ERROR_INVALID_PARAMETER:
  case ERROR_INVALID_FUNCTION:
  case WSAEINVAL:
  case WSAEFAULT: return HY_EINVAL;
  case WSAENOTSOCK:
  case ERROR_INVALID_HANDLE: /* = WSA_INVALID_HANDLE */
  case WSAEBADF: return HY_EBADF;
  case WAIT_TIMEOUT:
  case ERROR_TIMEOUT:
  case ERROR_SEM_TIMEOUT:
  case WSAETIMEDOUT: return HY_ETIMEDOUT;
  case ERROR_OPERATION_ABORTED: /* = WSA_OPERATION_ABORTED */
  case WSAECANCELLED:
  case WSAEINTR: return HY_ECANCELED;
  case WSAEWOULDBLOCK:
  case WSAEINPROGRESS:
  case WSAEALREADY:
  case ERROR_IO_PENDING:
  case ERROR_RETRY: return HY_EAGAIN;
  case ERROR_BUSY:
  case ERROR_SHARING_VIOLATION:
  case ERROR_LOCK_VIOLATION: return HY_EBUSY;
  case ERROR_CALL_NOT_IMPLEMENTED:
  case ERROR_NOT_SUPPORTED:
  case WSASYSNOTREADY:
  case WSAVERNOTSUPPORTED:
  case WSANOTINITIALISED: return HY_ENOSYS;
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND:
  case ERROR_NOT_FOUND: return HY_ENOENT;
  case ERROR_ALREADY_EXISTS:
  case ERROR_FILE_EXISTS: return HY_EEXIST;
  case ERROR_PRIVILEGE_NOT_HELD: return HY_EPERM;
  case ERROR_ACCESS_DENIED:
  case WSAEACCES: return HY_EACCES;
  case ERROR_TOO_MANY_OPEN_FILES:
  case WSAEMFILE: return HY_EMFILE;
  case ERROR_NO_SYSTEM_RESOURCES:
  case ERROR_NONPAGED_SYSTEM_RESOURCES:
  case WSAENOBUFS: return HY_ENOBUFS;
  case ERROR_BROKEN_PIPE:
  case ERROR_NO_DATA:
  case ERROR_PIPE_NOT_CONNECTED:
  case WSAESHUTDOWN: return HY_EPIPE;
  case ERROR_NETNAME_DELETED:
  case WSAECONNRESET:
  case WSAENETRESET: return HY_ECONNRESET;
  case ERROR_CONNECTION_REFUSED:
  case WSAECONNREFUSED: return HY_ECONNREFUSED;
  case ERROR_CONNECTION_ABORTED:
  case WSAECONNABORTED: return HY_ECONNABORTED;
  case WSAENOTCONN: return HY_ENOTCONN;
  case WSAEADDRINUSE:
  case ERROR_ADDRESS_ALREADY_ASSOCIATED: return HY_EADDRINUSE;
  case WSAEADDRNOTAVAIL: return HY_EADDRNOTAVAIL;
  case WSAEAFNOSUPPORT:
  case WSAEPFNOSUPPORT: return HY_EAFNOSUPPORT;
  case ERROR_NETWORK_UNREACHABLE:
  case WSAENETUNREACH:
  case WSAENETDOWN: return HY_ENETUNREACH;
  case ERROR_HOST_UNREACHABLE:
  case WSAEHOSTUNREACH: return HY_EHOSTUNREACH;
  case WSAEMSGSIZE:
  case ERROR_MORE_DATA: return HY_EMSGSIZE;
  case ERROR_ARITHMETIC_OVERFLOW:
  case ERROR_BUFFER_OVERFLOW: return HY_EOVERFLOW;
  case ERROR_HANDLE_EOF: return HY_EOF;
  case ERROR_IO_DEVICE:
  case ERROR_CRC: return HY_EIO;
  case WSAEOPNOTSUPP:
  case WSAEPROTONOSUPPORT:
  case WSAESOCKTNOSUPPORT: return HY_ENOTSUP;
  case WSAEPROTOTYPE:
  case WSAENOPROTOOPT: return HY_EPROTO;
  case ERROR_POSSIBLE_DEADLOCK: return HY_EDEADLK;
  default: return HY_EUNKNOWN;
  }
}

int hy__win_last_error(void) { return hy__win_error(GetLastError()); }
int hy__wsa_last_error(void) { return hy__win_error((unsigned long)WSAGetLastError()); }
#endif
