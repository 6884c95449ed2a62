"""An empty program: the start-up cost of bench_program."""
