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

/// gettid(2): the calling thread's kernel id.
int32_t sy_gettid(void);

#endif
