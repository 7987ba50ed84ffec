package dev.edgekit.core

import com.google.gson.JsonElement
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

class BenchStatsTest {
    private val cases = Contract.json("bench/samples.json").getAsJsonArray("cases").map { it.asJsonObject }

    private fun near(name: String, expected: JsonElement?, actual: Double?) {
        if (expected == null || expected.isJsonNull) {
            assertNull(name, actual)
            return
        }
        val want = expected.asDouble
        assertEquals(name, want, actual!!, Math.abs(want) * RELATIVE_TOLERANCE)
    }

    @Test
    fun statisticsEqualEdgekitTiming() {
        for (case in cases) {
            val name = case.get("name").asString
            val samples = case.getAsJsonArray("samples_ms").map { it.asDouble }
            val stats = BenchStats.of(samples)
            val expected = case.getAsJsonObject("expected")
            assertEquals(name, expected.get("runs").asInt, stats.runs)
            near("$name median", expected.get("median_ms"), stats.medianMs)
            val ci = expected.get("median_ci95_ms")
            if (ci.isJsonNull) {
                assertNull(name, stats.medianCi95Ms)
            } else {
                near("$name ci low", ci.asJsonArray[0], stats.medianCi95Ms!!.first)
                near("$name ci high", ci.asJsonArray[1], stats.medianCi95Ms.second)
            }
            near("$name p90", expected.get("p90_ms"), stats.p90Ms)
            near("$name p99", expected.get("p99_ms"), stats.p99Ms)
            near("$name mean", expected.get("mean_ms"), stats.meanMs)
            near("$name std", expected.get("std_ms"), stats.stdMs)
            near("$name trimmed", expected.get("trimmed_mean_ms"), stats.trimmedMeanMs)
            near("$name cv", expected.get("cv"), stats.cv)
            near("$name min", expected.get("min_ms"), stats.minMs)
            near("$name max", expected.get("max_ms"), stats.maxMs)

            val verdict = Reliability.of(stats, emptyList(), samples)
            val want = case.getAsJsonObject("reliability")
            assertEquals(name, want.get("reliable").asBoolean, verdict.reliable)
            assertEquals(name, want.getAsJsonArray("reasons").map { it.asString }, verdict.reasons)
        }
    }

    @Test
    fun roundsThatDisagreeAreFlagged() {
        val stats = BenchStats.of(List(20) { 10.0 + it % 2 })
        val verdict = Reliability.of(stats, listOf(10.0, 10.5, 13.0), null)
        assertEquals(listOf("rounds disagree by 29%"), verdict.reasons)
    }

    @Test
    fun fsumIsExactlyRounded() {
        assertEquals(1e-16, BenchStats.fsum(listOf(1.0, 1e-16, -1.0)), 0.0)
        assertEquals(0.0, BenchStats.fsum(listOf(0.1, 0.2, -0.3)) - 2.7755575615628914E-17, 0.0)
    }

    companion object {
        // Both sides round exact sums and exact square roots once; only the percentile and
        // median arithmetic repeat the same double operations.
        const val RELATIVE_TOLERANCE = 1e-12
    }
}
