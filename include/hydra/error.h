/* hydra/error.h - the error table.
 *
 * Every Hydra call that can fail returns an int: 0 is success, a positive
 * value is a count, a negative value is one of the HY_E* codes below.  The
 * codes are Hydra's own and have the same values on every platform; system
 * errors (errno, GetLastError, WSAGetLastError) are translated once, at the
 * platform edge, by hy_translate_errno() and its Windows twin.
 *
 * One X-macro list generates the enum, hy_strerror() and hy_err_name(), so
 * a new code is one line here and nothing else.
 */
#ifndef HYDRA_ERROR_H
#define HYDRA_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define HY_ERRNO_MAP(XX)                                                      \
  XX(ENOMEM, "out of memory")                                                 \
  XX(EINVAL, "invalid argument")                                              \
  XX(ECLOSED, "channel or object closed")                                     \
  XX(ETIMEDOUT, "deadline passed")                                            \
  XX(ECANCELED, "operation canceled")                                         \
  XX(ESTALE, "stale handle: the object is gone")                              \
  XX(EAGAIN, "resource temporarily unavailable")                              \
  XX(EBUSY, "resource busy")                                                  \
  XX(ESHUTDOWN, "runtime is shutting down")                                   \
  XX(ENOSYS, "function not available on this platform or backend")           \
  XX(ENOENT, "no such name")                                                  \
  XX(EEXIST, "name already exists")                                           \
  XX(EPERM, "operation not permitted")                                        \
  XX(EACCES, "permission denied")                                             \
  XX(EBADF, "bad file descriptor or handle")                                  \
  XX(EMFILE, "too many open files")                                           \
  XX(ENFILE, "file table overflow")                                           \
  XX(ENOBUFS, "no buffer space available")                                    \
  XX(EPIPE, "broken pipe")                                                    \
  XX(ECONNRESET, "connection reset by peer")                                  \
  XX(ECONNREFUSED, "connection refused")                                      \
  XX(ECONNABORTED, "connection aborted")                                      \
  XX(ENOTCONN, "socket is not connected")                                     \
  XX(EADDRINUSE, "address already in use")                                    \
  XX(EADDRNOTAVAIL, "address not available")                                  \
  XX(EAFNOSUPPORT, "address family not supported")                            \
  XX(ENETUNREACH, "network is unreachable")                                   \
  XX(EHOSTUNREACH, "host is unreachable")                                     \
  XX(EMSGSIZE, "message too long")                                            \
  XX(EOVERFLOW, "value too large or queue full")                              \
  XX(ERANGE, "result out of range")                                           \
  XX(EPROTO, "malformed data")                                                \
  XX(EOF, "end of stream")                                                    \
  XX(EIO, "input/output error")                                               \
  XX(ENOTSUP, "operation not supported")                                      \
  XX(EDEADLK, "operation would deadlock")                                     \
  XX(EUNKNOWN, "unknown system error")

typedef enum hy_errno {
  HY__ERRNO_BASE = -1000,
#define HY__ERR_ENUM(name, msg) HY_##name,
  HY_ERRNO_MAP(HY__ERR_ENUM)
#undef HY__ERR_ENUM
  HY__ERRNO_END
} hy_errno_t;

/* Returns a sentence for a code (negative HY_E*), "success" for 0, and
 * "unknown error" for anything else.  Never NULL; the string is static. */
const char *hy_strerror(int err);

/* Returns the code's name, such as "HY_ETIMEDOUT"; "HY_OK" for 0. */
const char *hy_err_name(int err);

/* Maps a positive errno value to a HY_E* code (HY_EUNKNOWN if unmapped). */
int hy_translate_errno(int sys_errno);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_ERROR_H */
