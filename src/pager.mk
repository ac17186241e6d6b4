# Lazy restore: on-demand paging of guest RAM from an image (userfaultfd
# MISSING/MINOR), prefetch and graduation. docs/RESTORE.md.
libwpsnap_la_SOURCES += src/pager.c stream/img_reader_int.h
pkginclude_HEADERS += include/wpsnap/pager.h
# Working sets: the pages a restored guest needs first (image blob
# wpsnap.written, <image>.wset files), docs/RESTORE.md and FORMAT.md.
libwpsnap_la_SOURCES += src/wset.c
pkginclude_HEADERS += include/wpsnap/wset.h
