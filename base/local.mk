# base/: the ground floor. Helpers every floor above may use (the library,
# the daemon, the tools): the context and its logging, the monotonic clock,
# deadlines, bitmap runs, the /proc/PID/maps reader, the guest-memory
# reader (memsrc), running a helper program. They depend on libc and the
# public headers alone and on nothing in src/, wp/ or stream/.
libwpsnap_priv_la_SOURCES += \
	base/bits.h \
	base/clock.h \
	base/ctx.c \
	base/deadline.h \
	base/log.h \
	base/memsrc.c \
	base/memsrc.h \
	base/procmaps.c \
	base/procmaps.h \
	base/spawn.c \
	base/spawn.h \
	base/zero.h
