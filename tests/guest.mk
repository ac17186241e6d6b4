# tests of the guest module
