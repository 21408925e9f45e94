/* hydra/hub_win.h - hub events under the Win32 names of seed 000 (Windows
 * only): a producer's SetHubEvent releases every connected consumer exactly
 * once, and each consumer is an ordinary event HANDLE.
 *
 *   HHEVENT hub = CreateHubEventW(NULL, FALSE, FALSE, L"app/reload");
 *   HANDLE a = ConnectHubEventW(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE,
 *                               L"app/reload");
 *   HANDLE b = ConnectHubEventW(0, FALSE, L"app/reload");
 *   SetHubEvent(hub);                      // releases a and b, once each,
 *   WaitForSingleObject(a, INFINITE);      // also if nobody waited then
 *   WaitForSingleObject(b, INFINITE);
 *   CloseHandle(a);                        // disconnects a alone
 *   CloseHandle(b);
 *   DestroyHubEvent(hub);
 *
 * It is a thin layer over hydra/hub.h: each hub is a hy_hub_t, each
 * consumer a hy_hub_consumer_t whose OS handle (hy_hub_os_handle) is the
 * event.  The consumer's handle can be used as if CreateEvent had returned
 * it: with every wait function (WaitForSingleObject, WaitForMultipleObjects,
 * MsgWaitForMultipleObjectsEx, SignalObjectAndWait, ...), and with
 *   SetEvent    - releases this consumer alone (a pending release),
 *   ResetEvent  - withdraws this consumer's pending release alone,
 *   PulseEvent  - releases whoever waits on this consumer now,
 *   CloseHandle - disconnects this consumer; the hub and the other
 *                 consumers are not affected (the consumer goes once every
 *                 handle to its event is closed, also handles duplicated
 *                 with DuplicateHandle or inherited by a child process).
 * An auto-reset hub gives auto-reset events: a wait that returns
 * WAIT_OBJECT_0 takes the release; sets not taken yet coalesce into one.
 * A manual-reset hub gives manual-reset events that stay signalled until
 * ResetHubEvent (all consumers) or ResetEvent (that one).
 *
 * Names: a hub has a name (at most 63 bytes once in UTF-8, no backslash)
 * that is unique on the machine's session, as a kernel object's name is; a
 * consumer connects by that name from this process or from another one.
 * A hub serves its name to other processes on a named pipe,
 * \\.\pipe\hydra-hub\<name>, as seed 000's own downlevel implementation
 * does: a thread per hub answers each connect by duplicating a new
 * consumer's event into the connecting process (found from the pipe, not
 * from what it says).  Within the process no pipe is involved.  The layer
 * keeps its hubs in a runtime of its own (no workers), made with the
 * first hub and closed with the last, so it needs no set-up call.  Every
 * function is thread-safe.
 *
 * Errors are reported the Win32 way: NULL or FALSE, and GetLastError()
 * says why - ERROR_INVALID_PARAMETER (a NULL, empty or too long name),
 * ERROR_INVALID_NAME (a backslash in it), ERROR_INVALID_HANDLE (an HHEVENT
 * that is not a live hub), ERROR_ALREADY_EXISTS (CreateHubEvent: the name
 * is taken, in this process or another), ERROR_FILE_NOT_FOUND
 * (ConnectHubEvent: no hub has that name), ERROR_NOT_ENOUGH_MEMORY, or the
 * error of the kernel call that failed.
 */
#ifndef HYDRA_HUB_WIN_H
#define HYDRA_HUB_WIN_H

#ifdef _WIN32
#include <windows.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The producer's handle: not a kernel handle, good only for the calls
 * below (it cannot be waited on, duplicated or closed with CloseHandle). */
typedef struct HubEvent *HHEVENT;

/* Creates a hub.  bManualReset as in CreateEvent; bInitialState: a
 * manual-reset hub starts set (consumers connect released); ignored for an
 * auto-reset hub, whose sets reach only the consumers connected at that
 * moment.  lpEventAttributes is accepted for CreateEvent's shape and not
 * used (the consumers' events have the default security descriptor and
 * are not inheritable unless ConnectHubEvent asks).  lpName is required.
 * Returns the hub, or NULL (GetLastError). */
HHEVENT WINAPI CreateHubEventW(LPSECURITY_ATTRIBUTES lpEventAttributes,
                               BOOL bManualReset, BOOL bInitialState,
                               LPCWSTR lpName);
HHEVENT WINAPI CreateHubEventA(LPSECURITY_ATTRIBUTES lpEventAttributes,
                               BOOL bManualReset, BOOL bInitialState,
                               LPCSTR lpName);

/* Destroys the hub: its name is free again and its consumers are
 * disconnected.  The consumers' event handles stay valid, keep the state
 * they had and are set no more; close them as usual.  hHubEvent is invalid
 * afterwards.  Returns TRUE, or FALSE (ERROR_INVALID_HANDLE). */
BOOL WINAPI DestroyHubEvent(HHEVENT hHubEvent);

/* Releases every connected consumer once (its event is signalled; an
 * auto-reset one until one wait takes it).  For a manual-reset hub the
 * hub's state becomes set.  Returns TRUE, or FALSE. */
BOOL WINAPI SetHubEvent(HHEVENT hHubEvent);

/* Withdraws every release not taken yet (resets every consumer's event)
 * and clears a manual-reset hub's state.  Returns TRUE, or FALSE. */
BOOL WINAPI ResetHubEvent(HHEVENT hHubEvent);

typedef struct _HUB_EVENT_INFO {
  SIZE_T nConsumersCount;   /* consumers connected now */
  SIZE_T nConsumersTotal;   /* connects over the hub's life */
  BOOL bManualReset;
  BOOL bInitialState;
  BOOL bSignalled;          /* manual-reset: set and not reset; auto: FALSE */
  ULONGLONG nSets;          /* SetHubEvent calls so far */
} HUB_EVENT_INFO, *PHUB_EVENT_INFO;

/* Fills in the first cbSize bytes of *lpHubEventInfo (so that a caller
 * built against a shorter HUB_EVENT_INFO keeps working; fields not known
 * to this version are zeroed).  Consumers whose handles were all closed
 * are disconnected first and not counted.  Returns TRUE, or FALSE
 * (ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER). */
BOOL WINAPI GetHubEventInfo(HHEVENT hHubEvent, PHUB_EVENT_INFO lpHubEventInfo,
                            SIZE_T cbSize);

/* Connects a new consumer to the hub called lpName (in this process or,
 * through its pipe, another) and returns its event (as OpenEvent would): dwDesiredAccess is the handle's access (0: all
 * access; SYNCHRONIZE is needed to wait, EVENT_MODIFY_STATE to set, reset
 * or pulse it), bInheritHandle whether child processes inherit it.  A
 * consumer of a manual-reset hub that is set starts signalled; otherwise
 * it sees only the sets that come after it connected.  Close it with
 * CloseHandle.  Returns the event, or NULL (GetLastError). */
HANDLE WINAPI ConnectHubEventW(DWORD dwDesiredAccess, BOOL bInheritHandle,
                               LPCWSTR lpName);
HANDLE WINAPI ConnectHubEventA(DWORD dwDesiredAccess, BOOL bInheritHandle,
                               LPCSTR lpName);

#ifdef UNICODE
#define CreateHubEvent CreateHubEventW
#define ConnectHubEvent ConnectHubEventW
#else
#define CreateHubEvent CreateHubEventA
#define ConnectHubEvent ConnectHubEventA
#endif

#ifdef __cplusplus
}
#endif
#endif /* _WIN32 */
#endif /* HYDRA_HUB_WIN_H */
