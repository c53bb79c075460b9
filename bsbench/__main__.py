from bsbench.core import interrupt

# SIGTERM (a scheduler's cancel, `timeout`) is Ctrl-C from the first instruction on: the same clean stop,
# exit 130, while the command is checked, the sweep planned or a job run
interrupt.from_the_start()

from bsbench.job.app import main  # noqa: E402 - after the stop is in place

main()
