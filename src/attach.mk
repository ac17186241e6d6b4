# Snapshots of an unmodified process (ptrace attach, injected userfaultfd).
libwpsnap_priv_la_SOURCES += src/attach.c src/attach.h
pkginclude_HEADERS += include/wpsnap/attach.h
