"""The pieces of `python -m miniclip.train` (miniclip/train.py holds the training loop itself).

    options.py      the command-line flags, with OpenCLIP's names and meanings
    data.py         datasets, tokenizer and loaders from the flags (built-in shapes, Fashion-MNIST,
                    OpenCLIP CSV/TSV, image+caption folders)
    state.py        training checkpoints: model, optimizer, step, data position, RNG; atomic writes,
                    finite weights only; the run folder's lock
    evaluate.py     zero-shot accuracy (seen / unseen pairs), hard negatives, retrieval, val loss
    plots.py        the PNG plots of a run folder, from its metrics.jsonl
    tensorboard.py  --report-to tensorboard: TensorBoard's event files, written without TensorBoard
"""
