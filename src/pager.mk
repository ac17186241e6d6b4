# Lazy restore: on-demand paging of guest RAM from an image (userfaultfd
# MISSING/MINOR), prefetch and graduation. docs/RESTORE.md.
libwpsnap_priv_la_SOURCES += src/pager.c
pkginclude_HEADERS += include/wpsnap/pager.h
# Working sets: the pages a restored guest needs first (image blob
# wpsnap.written, <image>.wset files) and the plan every lazy restore
# prefetches by (src/wsplan.c), docs/RESTORE.md and FORMAT.md.
libwpsnap_priv_la_SOURCES += src/wset.c src/wsplan.c
pkginclude_HEADERS += include/wpsnap/wset.h
