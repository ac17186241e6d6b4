# The VM module (<wpsnap/vm.h>, docs/VM.md): snapshots and restores of a
# libvirt/QEMU domain, disk, memory and device state of one instant, on
# top of the QEMU module (src/qemu.mk), whose libvirt monitor kind is
# built here too. libvirt is optional (configure --with-libvirt): without
# it the same functions say so (src/vm_none.c). libxml2 reads and edits
# the domain XML; it comes with libvirt (configure checks it with it).
pkginclude_HEADERS += include/wpsnap/vm.h
if HAVE_LIBVIRT
libwpsnap_priv_la_SOURCES += src/qemu_libvirt.c src/qemu_libvirt.h \
	src/vm.c src/vm_ckpt.c src/vm_int.h src/vm_lazy.c src/vm_meta.c src/vm_restore.c src/vm_xml.c
AM_CPPFLAGS += $(LIBVIRT_CFLAGS) $(LIBXML_CFLAGS)
libwpsnap_priv_la_LIBADD += $(LIBVIRT_LIBS) $(LIBXML_LIBS)
else
libwpsnap_priv_la_SOURCES += src/vm_none.c
endif
