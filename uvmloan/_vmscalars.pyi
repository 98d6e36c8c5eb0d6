# Stub of the C extension uvmloan._vmscalars (cext/vmscalars.c).

class PageScalars:
    frame: int
    flags: int
    offset: int
    pv_va: int

class AnonScalars:
    an_id: int
    an_swslot: int
