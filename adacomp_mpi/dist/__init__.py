"""Distribution across ranks: the only mpi4py import (``communicator``), the
gradient exchanges (encode -> Allgatherv -> decode -> average, or a dense
Allreduce), cross-rank agreement and launch facts. No torch here.
"""
