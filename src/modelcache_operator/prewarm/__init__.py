"""Page-cache prewarm for serving pods: the stdlib-only program (prewarm.py, prewarm.sh) that runs
inside the serving image, and the hook commands the webhook injects to run it."""
