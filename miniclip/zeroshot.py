"""Evaluating a CLIP without training a classifier: zero-shot classification and retrieval.

Zero-shot classification (Radford et al. 2021, section 3.1.2): write each class as sentences
("a photo of a {red circle}.", ...), embed them with the text tower, average the normalised
embeddings over the templates and normalise again: that is the class's weight vector w_c. An
image is assigned the class whose w_c is most similar to its normalised image embedding:

    prediction = argmax_c  image_features @ W.T          W: (C, embed_dim)

Retrieval (OpenCLIP's get_clip_metrics): for N matching (image, text) pairs, rank all N texts
for each image by similarity (and all images for each text) and report where the true partner
lands: R@k (fraction ranked in the top k), the mean and the median rank (1 = first).
"""
import numpy as np

from miniclip.backend import to_numpy
from miniclip.tensor import Tensor, no_grad


def _normalize_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@no_grad()
def encode_texts(model, tokenizer, texts, batch_size=256):
    """Normalised text embeddings (N, embed_dim) as a NumPy array."""
    out = [to_numpy(model.encode_text(tokenizer(texts[i:i + batch_size]), normalize=True).data)
           for i in range(0, len(texts), batch_size)]
    return np.concatenate(out)


@no_grad()
def encode_images(model, images, batch_size=256):
    """Normalised image embeddings (N, embed_dim) for an array or an iterable of image batches."""
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size)) \
        if isinstance(images, np.ndarray) else images
    out = [to_numpy(model.encode_image(Tensor(batch), normalize=True).data) for batch in batches]
    return np.concatenate(out)


def zeroshot_classifier(model, tokenizer, classnames, templates):
    """W (C, embed_dim): per class, the normalised mean of its normalised template embeddings."""
    weights = []
    for name in classnames:
        embeddings = encode_texts(model, tokenizer, [t.format(name) for t in templates])
        weights.append(embeddings.mean(axis=0))
    return _normalize_rows(np.stack(weights))


def zeroshot_accuracy(image_features, labels, classifier, topk=(1,)):
    """Top-k accuracy of argmax_c image_features @ classifier.T, for each k in topk."""
    scores = image_features @ classifier.T                              # (N, C)
    ranking = np.argsort(-scores, axis=1)
    labels = np.asarray(labels)
    return {f"top{k}": float((ranking[:, :k] == labels[:, None]).any(axis=1).mean()) for k in topk}


def retrieval_metrics(image_features, text_features):
    """R@1/5/10, mean and median rank, image->text and text->image, for matching rows."""
    similarity = image_features @ text_features.T                       # (N, N), pairs on the diagonal
    metrics = {}
    for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        # rank of the true partner: how many candidates score strictly higher, plus one
        true_scores = np.diag(scores)[:, None]
        ranks = (scores > true_scores).sum(axis=1) + 1
        metrics[f"{direction}_mean_rank"] = float(ranks.mean())
        metrics[f"{direction}_median_rank"] = float(np.floor(np.median(ranks)))
        for k in (1, 5, 10):
            metrics[f"{direction}_R@{k}"] = float((ranks <= k).mean())
    return metrics


def caption_vs_hard_negatives(image_features, caption_features, negative_features):
    """Fraction of images whose true caption scores above every one of its hard negatives.

    caption_features: (N, D); negative_features: (N, K, D), K negatives per image (e.g. the same
    caption with the colours swapped or the relation reversed).
    """
    positive = (image_features * caption_features).sum(-1)                            # (N,)
    negative = np.einsum("nd,nkd->nk", image_features, negative_features)             # (N, K)
    return float((positive[:, None] > negative).all(axis=1).mean())
