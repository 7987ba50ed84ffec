package dev.edgekit.core

import kotlin.math.exp

/** One class of a top-k list: its index into the labels, the label, softmax probability. */
data class Prediction(val index: Int, val label: String, val probability: Double)

/** Softmax and top-k as `edgekit classify` ranks classes (edgekit/classify.py). */
object Classifier {
    /** Probabilities in double (small scores keep their digits), shifted by the max logit so
     * large logits do not overflow. */
    fun softmax(logits: FloatArray): DoubleArray {
        require(logits.isNotEmpty()) { "softmax of no logits" }
        val max = logits.maxOrNull()!!.toDouble()
        val exps = DoubleArray(logits.size) { exp(logits[it].toDouble() - max) }
        val sum = exps.sum()
        return DoubleArray(exps.size) { exps[it] / sum }
    }

    /** The k most probable classes, best first; equal probabilities keep label order. */
    fun topK(logits: FloatArray, labels: List<String>, k: Int): List<Prediction> {
        if (logits.size != labels.size) {
            throw EdgekitCoreException(
                "topK: ${logits.size} logits but ${labels.size} labels. " +
                    "Hint: use the labels of the manifest the model came with.",
            )
        }
        if (k < 1) throw EdgekitCoreException("topK: k = $k is not allowed. Hint: use 1 or more.")
        val probabilities = softmax(logits)
        // sortedByDescending is stable: ties stay in index order, like numpy's stable argsort.
        return probabilities.indices.sortedByDescending { probabilities[it] }
            .take(minOf(k, labels.size))
            .map { Prediction(it, labels[it], probabilities[it]) }
    }
}

/** `topK` as a top-level function: the name the core API uses. */
fun topK(logits: FloatArray, labels: List<String>, k: Int): List<Prediction> =
    Classifier.topK(logits, labels, k)
