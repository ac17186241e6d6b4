# owned by the reference guest
