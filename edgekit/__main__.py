"""`python -m edgekit`: the CLI, as torchrun starts it (`torchrun --nproc_per_node N -m edgekit train ...`)."""

from edgekit.cli import main

main()
