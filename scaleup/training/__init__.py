"""What every scale-up training job shares: accelerate checkpoints that resume exactly, a JSONL log, the step loop."""
