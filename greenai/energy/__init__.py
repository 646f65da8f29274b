"""Energy: meters that measure named windows (Zeus's counters, a labelled estimate, none), the
counters themselves, idle power, and whose joules are whose when trials share a GPU. Knows
torch and Zeus; nothing of training, stores or sweeps."""
