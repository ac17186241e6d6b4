# The ground floor: helpers shared by the whole tree, depending on libc
# only (never on src/).
libwpsnap_la_SOURCES += base/procmaps.c base/procmaps.h
