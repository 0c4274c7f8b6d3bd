#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "CLinux.h"

int sy_sync_file_range(int fd, int64_t offset, int64_t count, unsigned int flags) {
    return sync_file_range(fd, offset, count, flags);
}

int sy_rename_noreplace(const char *from, const char *to) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int32_t sy_gettid(void) {
    return (int32_t)gettid();
}

int sy_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
    int count = CPU_COUNT(&set);
    return count > 0 ? count : 1;
}

void sy_set_thread_name(const char *name) {
    char truncated[16];
    size_t i = 0;
    for (; name[i] != 0 && i < sizeof(truncated) - 1; i++) truncated[i] = name[i];
    truncated[i] = 0;
    (void)pthread_setname_np(pthread_self(), truncated);
}

// Defined by the Swift concurrency runtime (libswift_Concurrency), which calls them, when set, in place
// of its own enqueueing onto libdispatch.
extern void *swift_task_enqueueGlobal_hook;
extern void *swift_task_enqueueGlobalWithDelay_hook;
extern void *swift_task_enqueueGlobalWithDeadline_hook;

int sy_install_global_executor_hooks(void *global, void *delay, void *deadline) {
    if (swift_task_enqueueGlobal_hook != NULL || swift_task_enqueueGlobalWithDelay_hook != NULL
        || swift_task_enqueueGlobalWithDeadline_hook != NULL) return -1;
    swift_task_enqueueGlobalWithDelay_hook = delay;
    swift_task_enqueueGlobalWithDeadline_hook = deadline;
    swift_task_enqueueGlobal_hook = global;
    return 0;
}
