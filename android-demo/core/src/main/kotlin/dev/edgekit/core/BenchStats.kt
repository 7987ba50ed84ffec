package dev.edgekit.core

import java.math.BigDecimal
import java.math.BigInteger
import java.math.MathContext
import java.math.RoundingMode

/**
 * Latency statistics with the estimators of edgekit/bench/timing.py `summarize`, so a phone's
 * numbers mean what the host's mean: the sample median, a distribution-free 95% interval for
 * it, p90 from 10 runs and p99 from 100 (linear interpolation between closest ranks), the mean
 * (exactly rounded sum, as Python's fsum), the population std (exact, as Python's statistics),
 * the 10%-trimmed mean and the coefficient of variation.
 */
data class BenchStats(
    val runs: Int,
    val medianMs: Double,
    val medianCi95Ms: Pair<Double, Double>?,
    val p90Ms: Double?,
    val p99Ms: Double?,
    val meanMs: Double,
    val stdMs: Double,
    val trimmedMeanMs: Double?,
    val cv: Double?,
    val minMs: Double,
    val maxMs: Double,
) {
    companion object {
        /** Percentiles need enough samples above them: p90 from 10 runs, p99 from 100. */
        const val MIN_RUNS_FOR_P90 = 10
        const val MIN_RUNS_FOR_P99 = 100
        private const val TRIM_PROPORTION = 0.1

        fun of(samplesMs: List<Double>): BenchStats {
            if (samplesMs.isEmpty()) {
                throw EdgekitCoreException("BenchStats: no samples. Hint: time at least one run.")
            }
            val ordered = samplesMs.sorted()
            val n = ordered.size
            val mean = fmean(ordered)
            val std = if (n > 1) pstdev(ordered) else 0.0
            return BenchStats(
                runs = n,
                medianMs = median(ordered),
                medianCi95Ms = medianConfidenceInterval(ordered),
                p90Ms = if (n >= MIN_RUNS_FOR_P90) percentile(ordered, 0.90) else null,
                p99Ms = if (n >= MIN_RUNS_FOR_P99) percentile(ordered, 0.99) else null,
                meanMs = mean,
                stdMs = std,
                trimmedMeanMs = trimmedMean(ordered, TRIM_PROPORTION),
                cv = if (mean > 0) std / mean else null,
                minMs = ordered.first(),
                maxMs = ordered.last(),
            )
        }

        /** statistics.median: the middle value, or the mean of the two middle ones. */
        fun median(ordered: List<Double>): Double {
            val n = ordered.size
            return if (n % 2 == 1) ordered[n / 2] else (ordered[n / 2 - 1] + ordered[n / 2]) / 2
        }

        /** numpy's default percentile: linear between closest ranks. */
        fun percentile(ordered: List<Double>, q: Double): Double {
            if (ordered.size == 1) return ordered[0]
            val position = q * (ordered.size - 1)
            val lower = position.toInt()
            val upper = minOf(lower + 1, ordered.size - 1)
            return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
        }

        /** Mean after dropping `proportion` of the samples from each end (scipy's trim_mean). */
        fun trimmedMean(ordered: List<Double>, proportion: Double): Double {
            val cut = (proportion * ordered.size).toInt()
            val kept = ordered.subList(cut, ordered.size - cut).ifEmpty { ordered }
            return fmean(kept)
        }

        /**
         * Order statistics j and n - j + 1 (1-based) of the widest symmetric trim whose coverage
         * of the median stays >= 95% under Binomial(n, 1/2); null below 6 samples. The binomial
         * terms are exact integers rounded to double and divided by 2^n, as Python does them.
         */
        fun medianConfidenceInterval(ordered: List<Double>, confidence: Double = 0.95): Pair<Double, Double>? {
            val n = ordered.size
            if (n < 6) return null
            val tail = (1.0 - confidence) / 2.0
            var j = 0
            if (n < 1024) {
                val twoToN = Math.pow(2.0, n.toDouble())
                var cumulative = 0.0
                var comb = BigInteger.ONE
                for (i in 0 until n) {
                    cumulative += comb.toDouble() / twoToN
                    if (cumulative > tail) break
                    j = i + 1
                    comb = comb.multiply(BigInteger.valueOf((n - i).toLong())).divide(BigInteger.valueOf((i + 1).toLong()))
                }
            } else {
                // 2.0 ** n overflows a double from n = 1024 (Python raises there): compare the
                // exact integer sum of binomial terms with tail * 2^n instead.
                val limit = BigDecimal(tail).multiply(BigDecimal(BigInteger.valueOf(2).pow(n)))
                var cumulative = BigInteger.ZERO
                var comb = BigInteger.ONE
                for (i in 0 until n) {
                    cumulative = cumulative.add(comb)
                    if (BigDecimal(cumulative) > limit) break
                    j = i + 1
                    comb = comb.multiply(BigInteger.valueOf((n - i).toLong())).divide(BigInteger.valueOf((i + 1).toLong()))
                }
            }
            j = maxOf(j, 1)
            return ordered[j - 1] to ordered[n - j]
        }

        /** statistics.fmean: the correctly rounded sum (math.fsum) divided by n. */
        fun fmean(values: List<Double>): Double = fsum(values) / values.size

        /** statistics.pstdev: sqrt of the exact mean squared deviation, rounded once. */
        fun pstdev(values: List<Double>): Double {
            val n = BigDecimal(values.size)
            var sum = BigDecimal.ZERO
            var sumSquares = BigDecimal.ZERO
            for (v in values) {
                val exact = BigDecimal(v) // a double is a finite binary fraction: exact
                sum = sum.add(exact)
                sumSquares = sumSquares.add(exact.multiply(exact))
            }
            // mean squared deviation = (n * S2 - S1^2) / n^2, exactly
            val numerator = n.multiply(sumSquares).subtract(sum.multiply(sum))
            if (numerator.signum() <= 0) return 0.0
            val context = MathContext(60, RoundingMode.HALF_EVEN)
            return sqrt(numerator, context).divide(n, context).toDouble()
        }

        private fun sqrt(value: BigDecimal, context: MathContext): BigDecimal {
            // Newton from the double estimate (BigDecimal.sqrt needs Android API 33).
            var x = BigDecimal(Math.sqrt(value.toDouble()))
            val two = BigDecimal(2)
            repeat(6) { x = x.add(value.divide(x, context)).divide(two, context) }
            return x
        }

        /** Python's math.fsum (Shewchuk's exact partials, rounded once at the end). */
        fun fsum(values: List<Double>): Double {
            val partials = ArrayList<Double>()
            for (value in values) {
                var x = value
                var i = 0
                for (index in partials.indices) {
                    var y = partials[index]
                    if (Math.abs(x) < Math.abs(y)) {
                        val t = x
                        x = y
                        y = t
                    }
                    val hi = x + y
                    val lo = y - (hi - x)
                    if (lo != 0.0) partials[i++] = lo
                    x = hi
                }
                while (partials.size > i) partials.removeAt(partials.size - 1)
                partials.add(x)
            }
            var n = partials.size
            if (n == 0) return 0.0
            var hi = partials[--n]
            var lo = 0.0
            while (n > 0) {
                val x = hi
                val y = partials[--n]
                hi = x + y
                val yr = hi - x
                lo = y - yr
                if (lo != 0.0) break
            }
            // Round half-way cases the way the exact sum says.
            if (n > 0 && ((lo < 0 && partials[n - 1] < 0) || (lo > 0 && partials[n - 1] > 0))) {
                val y = lo * 2
                val x = hi + y
                val yr = x - hi
                if (y == yr) hi = x
            }
            return hi
        }
    }
}

/** Whether a measurement can be trusted, with edgekit's thresholds and wording
 * (edgekit/bench/timing.py `reliability`). */
data class Reliability(val reliable: Boolean, val reasons: List<String>) {
    companion object {
        const val UNRELIABLE_CV = 0.25
        const val UNRELIABLE_P90_OVER_P50 = 1.5
        const val UNRELIABLE_ROUND_SPREAD = 0.25

        /** The CV over the middle 80% of the samples (one pause in 100 runs should not
         * condemn a row); p90/p50; how far per-round medians disagree. A sustained run's
         * windows are not rounds: throttling is its `sustained.slowdown`, not a spread. */
        fun of(stats: BenchStats, roundMediansMs: List<Double>, samplesMs: List<Double>?): Reliability {
            val reasons = ArrayList<String>()
            val cv = if (!samplesMs.isNullOrEmpty()) trimmedCv(samplesMs.sorted()) else stats.cv
            if (cv != null && cv > UNRELIABLE_CV) {
                reasons.add("CV ${percent(cv)} > ${percent(UNRELIABLE_CV)}")
            }
            val p90 = stats.p90Ms
            if (p90 != null && p90 > UNRELIABLE_P90_OVER_P50 * stats.medianMs) {
                reasons.add("p90/p50 ${fixed(p90 / stats.medianMs, 2)} > $UNRELIABLE_P90_OVER_P50")
            }
            if (roundMediansMs.size > 1) {
                val spread = (roundMediansMs.maxOrNull()!! - roundMediansMs.minOrNull()!!) /
                    BenchStats.median(roundMediansMs.sorted())
                if (spread > UNRELIABLE_ROUND_SPREAD) reasons.add("rounds disagree by ${percent(spread)}")
            }
            return Reliability(reasons.isEmpty(), reasons)
        }

        private fun trimmedCv(ordered: List<Double>): Double? {
            val cut = (0.1 * ordered.size).toInt()
            val kept = ordered.subList(cut, ordered.size - cut).ifEmpty { ordered }
            val mean = BenchStats.fmean(kept)
            return if (mean > 0 && kept.size > 1) BenchStats.pstdev(kept) / mean else null
        }

        // Python's format specs round the exact binary value half to even: "{:.0%}", "{:.2f}".
        private fun percent(value: Double) = fixed(value * 100, 0) + "%"

        private fun fixed(value: Double, digits: Int) =
            BigDecimal(value).setScale(digits, RoundingMode.HALF_EVEN).toPlainString()
    }
}
