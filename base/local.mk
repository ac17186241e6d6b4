# base/: the ground floor. Helpers every floor above may use (the library,
# the daemon, the tools), depending on libc alone and on nothing in src/.
# Header-only helpers are listed with the library so that they are
# distributed; they export no symbol.
libwpsnap_la_SOURCES += \
	base/deadline.h
