"""adacomp-mpi: data-parallel PyTorch training with AdaComp gradient compression over MPI."""

__version__ = "0.1.0"
