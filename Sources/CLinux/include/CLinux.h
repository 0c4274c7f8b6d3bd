// Linux calls that Swift's Glibc module does not export (they need _GNU_SOURCE), wrapped by
// functions compiled with it (CLinux.c).
#ifndef SWITCHYARD_CLINUX_H
#define SWITCHYARD_CLINUX_H

#include <stdint.h>

/// sync_file_range(2) flags.
enum {
    SY_SYNC_FILE_RANGE_WAIT_BEFORE = 1,
    SY_SYNC_FILE_RANGE_WRITE = 2,
    SY_SYNC_FILE_RANGE_WAIT_AFTER = 4,
};

/// sync_file_range(2): starts (and with the WAIT flags, waits for) writeback of a file range. 0 or -1 (errno).
int sy_sync_file_range(int fd, int64_t offset, int64_t count, unsigned int flags);

/// renameat2(2) with RENAME_NOREPLACE: renames `from` to `to` unless `to` exists (then -1, EEXIST).
/// -1 with EINVAL or ENOSYS where the file system or kernel cannot (the caller checks otherwise).
int sy_rename_noreplace(const char *from, const char *to);

/// gettid(2): the calling thread's kernel id.
int32_t sy_gettid(void);

/// The number of CPUs the calling thread may run on (sched_getaffinity(2)); at least 1.
int sy_cpu_count(void);

/// pthread_setname_np(3) for the calling thread (at most 15 bytes are kept).
void sy_set_thread_name(const char *name);

/// Installs Swift concurrency's global-executor hooks (the runtime's `swift_task_enqueueGlobal_hook`,
/// `swift_task_enqueueGlobalWithDelay_hook` and `swift_task_enqueueGlobalWithDeadline_hook`): every
/// job the runtime would hand to libdispatch's pool goes to these functions instead. 0 on success, -1
/// when hooks were installed already (by this call or by another library).
int sy_install_global_executor_hooks(void *global, void *delay, void *deadline);

#endif
