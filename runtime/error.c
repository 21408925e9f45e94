/* error.c - hy_strerror, hy_err_name and the errno edge.
 *
 * The names and messages come from HY_ERRNO_MAP; nothing here is written
 * twice.  hy_translate_errno() is the only place a POSIX errno becomes a
 * Hydra code; the Windows edge (GetLastError/WSAGetLastError) lives in
 * runtime/win/.
 */
#include <errno.h>
#include "hydra/error.h"

const char *hy_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define XX(name, msg)                                                         \
  case HY_##name:                                                             \
    return msg;
    HY_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown error";
  }
}

const char *hy_err_name(int err) {
  switch (err) {
  case 0:
    return "HY_OK";
#define XX(name, msg)                                                         \
  case HY_##name:                                                             \
    return "HY_" #name;
    HY_ERRNO_MAP(XX)
#undef XX
  default:
    return "HY_EUNKNOWN";
  }
}

int hy_translate_errno(int e) {
  switch (e) {
  case 0: return 0;
  case ENOMEM: return HY_ENOMEM;
  case EINVAL: return HY_EINVAL;
  case ETIMEDOUT: return HY_ETIMEDOUT;
  case ECANCELED: return HY_ECANCELED;
  case EAGAIN: return HY_EAGAIN;
#if defined(EWOULDBLOCK) && EWOULDBLOCK != EAGAIN
  case EWOULDBLOCK: return HY_EAGAIN;
#endif
  case EINPROGRESS: return HY_EAGAIN;
  case EBUSY: return HY_EBUSY;
  case ENOSYS: return HY_ENOSYS;
  case ENOENT: return HY_ENOENT;
  case EEXIST: return HY_EEXIST;
  case EPERM: return HY_EPERM;
  case EACCES: return HY_EACCES;
  case EBADF: return HY_EBADF;
  case EMFILE: return HY_EMFILE;
  case ENFILE: return HY_ENFILE;
  case ENOBUFS: return HY_ENOBUFS;
  case EPIPE: return HY_EPIPE;
  case ECONNRESET: return HY_ECONNRESET;
  case ECONNREFUSED: return HY_ECONNREFUSED;
  case ECONNABORTED: return HY_ECONNABORTED;
  case ENOTCONN: return HY_ENOTCONN;
  case EADDRINUSE: return HY_EADDRINUSE;
  case EADDRNOTAVAIL: return HY_EADDRNOTAVAIL;
  case EAFNOSUPPORT: return HY_EAFNOSUPPORT;
  case ENETUNREACH: return HY_ENETUNREACH;
  case EHOSTUNREACH: return HY_EHOSTUNREACH;
  case EMSGSIZE: return HY_EMSGSIZE;
  case EOVERFLOW: return HY_EOVERFLOW;
  case ERANGE: return HY_ERANGE;
  case EIO: return HY_EIO;
#if defined(ENOTSUP)
  case ENOTSUP: return HY_ENOTSUP;
#endif
#if defined(EOPNOTSUPP) && (!defined(ENOTSUP) || EOPNOTSUPP != ENOTSUP)
  case EOPNOTSUPP: return HY_ENOTSUP;
#endif
  case EDEADLK: return HY_EDEADLK;
#ifdef EPROTO
  case EPROTO: return HY_EPROTO;
#endif
#ifdef ESHUTDOWN
  case ESHUTDOWN: return HY_ESHUTDOWN;
#endif
  default: return HY_EUNKNOWN;
  }
}
