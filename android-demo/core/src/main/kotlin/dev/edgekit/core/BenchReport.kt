package dev.edgekit.core

import com.google.gson.GsonBuilder
import java.io.File
import java.time.OffsetDateTime
import java.time.ZoneOffset
import java.time.format.DateTimeFormatter
import java.time.temporal.ChronoUnit

/** The phone, as a bench report's `machine` block describes it (bench schema 2.1 fields). */
data class DeviceInfo(
    /** Manufacturer and model, e.g. "Google Pixel 8". */
    val model: String,
    /** e.g. "Android 14 (API 34)". */
    val os: String,
    /** ABI / architecture, e.g. "android-arm64-v8a". */
    val platform: String,
    /** The CPU or board as the kernel names it, e.g. "zuma". */
    val processor: String,
    val cpuCount: Int?,
    /** System on chip, e.g. "Google Tensor G3" (`machine.soc`), or null where the platform does
     * not name it. */
    val soc: String? = null,
    /** The platform's thermal state when the run started, by the platform's own names
     * (Android: "none", "light", "moderate", "severe", ...; iOS: "nominal", "fair", ...),
     * or null where the platform does not expose it (`machine.thermal_state_start`). */
    val thermalStateStart: String? = null,
    /** ... and when it ended (`machine.thermal_state_end`). */
    val thermalStateEnd: String? = null,
)

/** The runtime that ran the artifact on the device. */
data class DeviceRuntime(
    /** "litert", "executorch", "onnxruntime", "coreml": the library the app links
     * (BENCH_PROTOCOL.md says why LiteRT's differs from the host's "ai-edge-litert"). */
    val name: String,
    val version: String,
    val threads: Int?,
    /** "xnnpack", "gpu", "nnapi", "CPUExecutionProvider"... */
    val delegate: String?,
    /** Core ML's compute units ("cpuAndNeuralEngine"); null for runtimes without them. */
    val computeUnits: String? = null,
    val settings: Map<String, Any?> = emptyMap(),
)

/**
 * A sustained run: the benchmark repeated for minutes so thermal throttling shows, one median
 * per window (`sustained` of bench schema 2.1). Throttling is reported as [slowdown], not as
 * rounds that disagree: the windows are consecutive, not interleaved rounds of one setting.
 */
data class SustainedRun(
    val durationS: Double,
    val windowS: Double,
    val windowMediansMs: List<Double>,
    /** The platform's thermal state at the end of each window (empty where not exposed). */
    val thermalStates: List<String> = emptyList(),
) {
    /** Last window's median / first window's: > 1 means it slowed down. Null below two
     * windows, where there is nothing to compare. */
    val slowdown: Double?
        get() = if (windowMediansMs.size < 2 || windowMediansMs.first() <= 0.0) {
            null
        } else {
            windowMediansMs.last() / windowMediansMs.first()
        }
}

/** One artifact's measurement on the device. */
data class DeviceMeasurement(
    val manifest: Manifest,
    val component: String? = null,
    /** Where the artifact folder lives on the device. */
    val artifactPath: String?,
    val runtime: DeviceRuntime,
    val batch: Int = 1,
    val loadMs: Double?,
    val firstInferenceMs: Double?,
    val warmupRuns: Int?,
    /** Timed runs after warm-up, in order. */
    val samplesMs: List<Double>,
    /** Median of each interleaved round, when the app ran rounds (not sustained windows). */
    val roundMediansMs: List<Double> = emptyList(),
    /** Peak resident memory of the app process and its increase over loading and running. */
    val peakRssBytes: Long? = null,
    val memoryIncreaseBytes: Long? = null,
    val sustained: SustainedRun? = null,
    /** Set when the run failed: the row is written with status "error" and this message. */
    val error: String? = null,
)

/**
 * Writes a bench report of edgekit's schema 2.1 (edgekit/bench/schema.py,
 * edgekit/schemas/bench.schema.json) with `source: "device"` rows, so `edgekit bench ingest`
 * merges a phone's numbers with the host's. Rows link to the host's by the model file's
 * sha256 from the manifest. Statistics are BenchStats (edgekit's estimators).
 */
class BenchReportWriter(
    private val device: DeviceInfo,
    /** The edgekit version the app was built against (defaults to the artifact's exporter). */
    private val edgekitVersion: String? = null,
    private val settings: Map<String, Any?> = emptyMap(),
) {
    private val results = ArrayList<Map<String, Any?>>()
    private val notes = ArrayList<String>()
    private val warnings = ArrayList<String>()
    private var exporterVersion: String? = null

    fun addNote(note: String) = apply { notes.add(note) }

    fun addWarning(warning: String) = apply { warnings.add(warning) }

    fun add(measurement: DeviceMeasurement) = apply {
        val m = measurement
        val component = m.manifest.component(m.component)
        exporterVersion = exporterVersion ?: m.manifest.toolVersions["edgekit"]
        val row = linkedMapOf<String, Any?>(
            "name" to if (m.manifest.components.size == 1) m.manifest.name else "${m.manifest.name}/${component.name}",
            "status" to if (m.error == null) "ok" else "error",
            "error" to m.error,
            "source" to "device",
            "format" to m.manifest.format,
            "component" to component.name,
            "model_kind" to component.modelKind,
            "precision" to m.manifest.precision,
            "artifact" to m.artifactPath,
            "artifact_sha256" to m.manifest.sha256Of(m.component),
            "random_weights" to m.manifest.randomWeights,
            "model_size_bytes" to (
                component.sizeBytes ?: m.manifest.files.firstOrNull { it.path == component.modelFile }?.sizeBytes ?: 0L
                ),
            "fp32_weight_bytes" to component.fp32WeightBytes,
            "threads" to m.runtime.threads,
            "batch" to m.batch,
            "runtime" to linkedMapOf(
                "name" to m.runtime.name,
                "version" to m.runtime.version,
                "threads" to m.runtime.threads,
                "delegate" to m.runtime.delegate,
                "compute_units" to m.runtime.computeUnits,
                "settings" to m.runtime.settings,
            ),
            "load_ms" to m.loadMs,
            "first_inference_ms" to m.firstInferenceMs,
            "warmup_runs" to m.warmupRuns,
            "fidelity" to linkedMapOf(
                "verification_status" to component.artifactStatus,
                "worst_sqnr_db" to component.worstSqnrDb,
                "top1_agreement" to component.top1Agreement,
            ),
        )
        if (m.error == null && m.samplesMs.isNotEmpty()) {
            val stats = BenchStats.of(m.samplesMs)
            val reliability = Reliability.of(stats, m.roundMediansMs, m.samplesMs)
            row["latency"] = latencyJson(stats)
            row["throughput_per_s"] = m.batch * 1000.0 / stats.medianMs
            row["samples_ms"] = m.samplesMs
            row["samples_total"] = m.samplesMs.size
            row["round_medians_ms"] = m.roundMediansMs
            row["reliability"] = mapOf("reliable" to reliability.reliable, "reasons" to reliability.reasons)
        }
        m.sustained?.let {
            row["sustained"] = linkedMapOf(
                "duration_s" to it.durationS,
                "window_s" to it.windowS,
                "window_medians_ms" to it.windowMediansMs,
                "thermal_states" to it.thermalStates,
                "slowdown" to it.slowdown,
            )
        }
        if (m.peakRssBytes != null || m.memoryIncreaseBytes != null) {
            row["memory"] = mapOf("peak_rss_bytes" to m.peakRssBytes, "increase_bytes" to m.memoryIncreaseBytes)
        }
        results.add(row)
    }

    /** The report as JSON text. */
    fun toJson(createdUtc: OffsetDateTime = OffsetDateTime.now(ZoneOffset.UTC)): String {
        val report = linkedMapOf(
            "schema_version" to SCHEMA_VERSION,
            "created_utc" to createdUtc.withOffsetSameInstant(ZoneOffset.UTC)
                .truncatedTo(ChronoUnit.SECONDS).format(ISO_SECONDS),
            "edgekit_version" to (edgekitVersion ?: exporterVersion ?: "unknown"),
            "machine" to linkedMapOf(
                "hostname" to null,
                "os" to device.os,
                "platform" to device.platform,
                "processor" to device.processor,
                "cpu_count" to device.cpuCount,
                "device" to device.model,
                "soc" to device.soc,
                "thermal_state_start" to device.thermalStateStart,
                "thermal_state_end" to device.thermalStateEnd,
            ),
            "settings" to settings,
            "estimators" to ESTIMATORS,
            "results" to results,
            "warnings" to warnings,
            "notes" to notes,
        )
        return GSON.toJson(report)
    }

    /** Write the report whole or not at all: a temporary file beside it, then a rename. */
    fun write(file: File, createdUtc: OffsetDateTime = OffsetDateTime.now(ZoneOffset.UTC)): File {
        file.absoluteFile.parentFile?.mkdirs()
        val temporary = File(file.absoluteFile.parentFile, ".${file.name}.tmp")
        temporary.writeText(toJson(createdUtc), Charsets.UTF_8)
        if (!temporary.renameTo(file)) {
            temporary.delete()
            throw EdgekitCoreException("Cannot write the bench report to '$file'.")
        }
        return file
    }

    private fun latencyJson(stats: BenchStats) = linkedMapOf(
        "runs" to stats.runs,
        "median_ms" to stats.medianMs,
        "median_ci95_ms" to stats.medianCi95Ms?.let { listOf(it.first, it.second) },
        "p90_ms" to stats.p90Ms,
        "p99_ms" to stats.p99Ms,
        "mean_ms" to stats.meanMs,
        "std_ms" to stats.stdMs,
        "trimmed_mean_ms" to stats.trimmedMeanMs,
        "cv" to stats.cv,
        "min_ms" to stats.minMs,
        "max_ms" to stats.maxMs,
    )

    companion object {
        /** The bench schema this writer follows (edgekit/bench/schema.py BENCH_SCHEMA_VERSION). */
        const val SCHEMA_VERSION = "2.1"
        private val ISO_SECONDS: DateTimeFormatter = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ssxxx")
        private val GSON = GsonBuilder().setPrettyPrinting().disableHtmlEscaping().create()

        /** What each statistic is: edgekit's own descriptions (edgekit/bench/schema.py
         * ESTIMATORS) for the statistics this core computes. */
        val ESTIMATORS: Map<String, String> = linkedMapOf(
            "median_ms" to "sample median of the timed runs (all rounds pooled)",
            "median_ci95_ms" to "distribution-free 95% confidence interval for the median " +
                "(order statistics at the binomial(n, 0.5) quantiles); null below 6 runs",
            "p90_ms" to "90th percentile, linear interpolation between closest ranks; null below 10 runs",
            "p99_ms" to "99th percentile, same method; null below 100 runs (too few samples above it)",
            "mean_ms" to "arithmetic mean",
            "std_ms" to "population standard deviation",
            "trimmed_mean_ms" to "mean of the middle 80% (10% trimmed from each end)",
            "cv" to "coefficient of variation, std / mean (reliability uses the CV of the middle 80%)",
            "throughput_per_s" to "batch x 1000 / median_ms: images (or samples) per second, one stream",
        )
    }
}
