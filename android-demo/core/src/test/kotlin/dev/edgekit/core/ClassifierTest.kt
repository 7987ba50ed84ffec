package dev.edgekit.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class ClassifierTest {
    private val data = Contract.json("classify/cases.json")
    private val labels = data.getAsJsonArray("labels").map { it.asString }

    @Test
    fun topKMatchesEdgekitClassify() {
        for (element in data.getAsJsonArray("cases")) {
            val case = element.asJsonObject
            val name = case.get("name").asString
            val logits = case.getAsJsonArray("logits").map { it.asDouble.toFloat() }.toFloatArray()
            val predictions = topK(logits, labels, case.get("k").asInt)
            val expected = case.getAsJsonArray("expected").map { it.asJsonObject }
            assertEquals(name, expected.map { it.get("index").asInt }, predictions.map { it.index })
            assertEquals(name, expected.map { it.get("label").asString }, predictions.map { it.label })
            for ((prediction, want) in predictions.zip(expected)) {
                assertEquals(name, want.get("probability").asDouble, prediction.probability, PROBABILITY_ATOL)
            }
            val probabilities = Classifier.softmax(logits)
            case.getAsJsonArray("probabilities").forEachIndexed { i, p ->
                assertEquals(name, p.asDouble, probabilities[i], PROBABILITY_ATOL)
            }
        }
    }

    @Test
    fun tiesKeepLabelOrder() {
        val logits = FloatArray(labels.size).also { it[7] = 1f; it[2] = 1f }
        assertEquals(listOf(2, 7, 0), topK(logits, labels, 3).map { it.index })
    }

    @Test
    fun labelCountMismatchIsOneClearError() {
        val error = runCatching { topK(FloatArray(3), labels, 5) }.exceptionOrNull()
        assertTrue(error is EdgekitCoreException)
        assertEquals(
            "topK: 3 logits but 10 labels. Hint: use the labels of the manifest the model came with.",
            error!!.message,
        )
    }

    companion object {
        // Both sides compute in double; only the order of the final sum can differ.
        const val PROBABILITY_ATOL = 1e-12
    }
}
