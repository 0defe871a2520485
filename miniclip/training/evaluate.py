"""Evaluation during training: what a CLIP has learned, measured without training anything else.

- Zero-shot classification (Radford et al. 2021, 3.1.2): each class's classifier is the mean of
  its prompts' normalised text embeddings, normalised again; an image gets the class whose
  classifier is most similar. On the shapes data, "seen" images show colour-shape pairs that
  were in the training captions and "unseen" ones the held-out pairs, both classified among all
  36 pairs (chance: 1/36 = 2.8%). Seen >> unseen means the model memorised pairs instead of
  composing colour and shape; "style" images show seen pairs drawn in a style never trained on
  (outlined shapes on a light background): seen >> style means it learned the style too.
- Hard negatives (shapes): how often an image's own caption scores above the same caption with
  the colours swapped, the shapes swapped or the relation reversed (chance: 50% each).
- Retrieval on the val pairs: image->text and text->image R@1/5/10, mean and median rank
  (OpenCLIP's get_clip_metrics), and the validation loss with the current logit scale.
"""
import numpy as np

from miniclip.backend import to_numpy
from miniclip.training.data import eval_loader, transform
from miniclip.zeroshot import (caption_vs_hard_negatives, encode_images, encode_texts, retrieval_metrics,
                               zeroshot_accuracy)

SIMILARITY_PLOT_SIZE = 16   # the similarity matrix of the first 16 val pairs goes to the plots


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def classifier(model, tokenizer, prompts, device):
    """(C, D): per class, the normalised mean of its prompts' normalised embeddings."""
    features = encode_texts(model, tokenizer, [text for texts in prompts for text in texts], device=device)
    ends = np.cumsum([len(texts) for texts in prompts])   # class k's prompts: rows ends[k-1]:ends[k]
    return _unit_rows(np.stack([chunk.mean(axis=0) for chunk in np.split(features, ends[:-1])]))


def evaluate_zeroshot(model, tokenizer, zeroshot_set, args, image_size, device):
    weights = classifier(model, tokenizer, zeroshot_set.prompts, device)
    features, labels = [], []
    for images, batch_labels in eval_loader(zeroshot_set.dataset, args, image_size).epoch(0):
        features.append(encode_images(model, images, device=device))
        labels += list(batch_labels)
    topk = (1, 5) if len(zeroshot_set.classnames) > 5 else (1,)
    accuracy = zeroshot_accuracy(np.concatenate(features), labels, weights, topk=topk)
    return {f"{zeroshot_set.name}_{k}": v for k, v in accuracy.items()}


def evaluate_pairs(model, tokenizer, dataset, args, image_size, device, logit_scale, logit_bias=None):
    """Retrieval metrics and loss over all val pairs (the sigmoid loss when there is a logit_bias);
    also the similarity matrix for the plot."""
    images, texts = [], []
    for batch_images, batch_texts in eval_loader(dataset, args, image_size).epoch(0):
        images.append(encode_images(model, batch_images, device=device))
        texts += list(batch_texts)
    image_f, text_f = np.concatenate(images), encode_texts(model, tokenizer, texts, device=device)
    metrics = {f"val_{k}": v for k, v in retrieval_metrics(image_f, text_f).items()}
    logits = logit_scale * image_f.astype(np.float64) @ text_f.T.astype(np.float64)   # (N, N)
    if logit_bias is None:
        metrics["val_loss"] = float((_cross_entropy_diagonal(logits) + _cross_entropy_diagonal(logits.T)) / 2)
    else:
        labels = 2 * np.eye(len(logits)) - 1
        metrics["val_loss"] = float(np.logaddexp(0, -labels * (logits + logit_bias)).sum() / len(logits))
    n = SIMILARITY_PLOT_SIZE
    return metrics, {"similarity": image_f[:n] @ text_f[:n].T, "captions": texts[:n]}


def _cross_entropy_diagonal(logits):
    """Mean cross-entropy of each row against its diagonal entry."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(log_probs))


def evaluate_hard_negatives(model, tokenizer, scenes, args, image_size, device):
    eval_transform = transform(args, image_size, is_train=False)
    metrics = {}
    image_f = encode_images(model, np.stack([eval_transform(image) for image, _, _ in scenes]), device=device)
    caption_f = encode_texts(model, tokenizer, [text for _, text, _ in scenes], device=device)
    for kind in ("swap_colors", "swap_shapes", "reverse_relation"):
        rows = [i for i, (_, _, negatives) in enumerate(scenes) if kind in negatives]
        negative_f = encode_texts(model, tokenizer, [scenes[i][2][kind] for i in rows], device=device)
        metrics[f"hard_negatives_{kind}"] = caption_vs_hard_negatives(image_f[rows], caption_f[rows],
                                                                      negative_f[:, None, :])
    return metrics


def evaluate(model, data, args, image_size, device, zeroshot=True, val=True):
    """All the metrics of one evaluation, and what the plots need."""
    was_training = model.training
    model.eval()
    metrics, plot_data = {}, {}
    logit_scale = float(np.exp(to_numpy(model.logit_scale.data)))
    logit_bias = None if model.logit_bias is None else float(to_numpy(model.logit_bias.data))
    if zeroshot:
        for zeroshot_set in data.zeroshot:
            metrics.update(evaluate_zeroshot(model, data.tokenizer, zeroshot_set, args, image_size, device))
        if data.hard_negatives:
            metrics.update(evaluate_hard_negatives(model, data.tokenizer, data.hard_negatives, args, image_size,
                                                   device))
    if val and data.val is not None:
        val_metrics, plot_data = evaluate_pairs(model, data.tokenizer, data.val, args, image_size, device,
                                                logit_scale, logit_bias)
        metrics.update(val_metrics)
    model.train(was_training)
    return metrics, plot_data
