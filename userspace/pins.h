/* bpffs pin directories. The bpf data plane and the XDP guard pin their maps (the guard also its
 * program) into the same <pin-root>/<instance-id>/, where operators read them with bpftool.
 * Contract: pins_prepare() makes sure the directory is on a bpffs (mounting one at /sys/fs/bpf
 * when nothing is mounted there, as bpftool does) and creates it; pins_create() pins one BPF
 * object's maps under their own names, replacing stale pins of those names that an earlier run
 * of the same instance left; pins_remove() unlinks exactly those pins and then the directory
 * if nothing else is left in it. Pins of other names in the directory are never touched.
 * Directories of dead relays are stale_pins.c's job. Failures are logged with the owner's
 * prefix at the owner's level. */
#ifndef DVV_PINS_H
#define DVV_PINS_H

#include "log.h"

#include <limits.h>
#include <stdbool.h>

struct bpf_object;
struct bpf_program;

struct pin_dir {
	char path[PATH_MAX];
	const char *who;	   /* log prefix: "data plane bpf", "xdp guard" */
	enum log_level fail_level; /* of failures: a warning when the owner falls back */
	bool made;		   /* path exists: pins_remove() removes it if it is empty */
};

/* Make the absolute directory path on a bpffs. 0 or -errno. */
int pins_prepare(struct pin_dir *pd, const char *path, const char *who,
		 enum log_level fail_level);
/* Pin each map of obj (not the internal .rodata & co) as <path>/<map name> and, when prog is
 * given, prog as <path>/<prog_name>. 0 or -errno. */
int pins_create(struct pin_dir *pd, struct bpf_object *obj, struct bpf_program *prog,
		const char *prog_name);
/* Unlink the pins pins_create() makes for obj and prog_name (either may be NULL), then the
 * directory if it is empty. Safe after any partial start, and on a zeroed pd. */
void pins_remove(struct pin_dir *pd, struct bpf_object *obj, const char *prog_name);

#endif
