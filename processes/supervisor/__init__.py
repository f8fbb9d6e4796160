"""main.py's side of the stack: start the processes in order, supervise them, stop them, and
summarize what they published."""
