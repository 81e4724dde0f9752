"""Server side: the Flower ServerApp (thin), phase orchestration, threshold and merge maths."""
