package dev.edgekit.demo

import android.app.Activity
import android.os.Bundle
import android.os.Debug
import android.os.SystemClock
import android.util.Log
import android.widget.TextView
import dev.edgekit.core.BenchStats
import dev.edgekit.core.Component
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.Random
import java.util.TimeZone

/**
 * Benchmark mode, the receiving side of android-demo/BENCH_PROTOCOL.md: started by
 * `adb shell am start -n dev.edgekit.demo/.BenchmarkActivity --es artifact ... --es report ...`
 * (edgekit bench --device adb) or by the in-app button. Measures every component (or the one
 * named) and writes a bench report of schema 2.1 through the core's BenchReportWriter.
 */
class BenchmarkActivity : Activity() {
    private lateinit var status: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val screen = Screen(this)
        status = screen.text("Benchmarking...")
        val request = BenchRequest.from(this)
        if (request == null) {
            val message = "No artifact to benchmark: pass --es artifact <folder> (BENCH_PROTOCOL.md)."
            Log.e(LOG_TAG, message)
            // Started by adb with a report path: say why in the .error file edgekit polls for.
            intent.getStringExtra("report")?.let { report ->
                runCatching { BenchOutput.writeAtomically(BenchRequest.errorFileFor(File(report)), message + "\n") }
                finish()
            }
            status.text = message
            return
        }
        // Keep the screen on: a phone that sleeps mid-run throttles and pauses the app.
        window.addFlags(android.view.WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        status.text = "Benchmarking ${request.artifact.name}: ${request.describe()}"
        Log.i(LOG_TAG, "${request.artifact}: ${request.describe()}, report ${request.report}")
        inBackground(
            work = { BenchmarkRun(this, request).execute() },
            onError = { message ->
                Log.e(LOG_TAG, "${request.artifact}: $message")
                val written = runCatching {
                    BenchOutput.writeAtomically(request.errorFile, message.lineSequence().first() + "\n")
                }
                written.exceptionOrNull()?.let { Log.e(LOG_TAG, "could not write ${request.errorFile}", it) }
                status.text = message
                if (request.fromAdb) finish()
            },
            onDone = { summary ->
                Log.i(LOG_TAG, summary)
                status.text = summary
                if (request.fromAdb) finish()
            },
        )
    }
}

/** Progress and failures go to logcat under this tag (BENCH_PROTOCOL.md, step 6). */
const val LOG_TAG = "EdgekitBench"

/** The intent extras of BENCH_PROTOCOL.md, with its defaults. */
class BenchRequest(
    val artifact: File,
    val report: File,
    val runs: Int,
    val warmup: Int,
    val threads: Int?,
    /** > 0: sustained mode for this many seconds (`edgekit bench --min-time`). */
    val sustainedSeconds: Int,
    val component: String?,
    /** Started by adb with a report path: finish when done instead of showing the result. */
    val fromAdb: Boolean,
) {
    /** `<run id>.error` beside `<run id>.json`. */
    val errorFile: File get() = errorFileFor(report)

    fun describe() = if (sustainedSeconds > 0) {
        "sustained for $sustainedSeconds s (at least $runs runs) after $warmup warm-up runs"
    } else {
        "$runs runs after $warmup warm-up runs"
    }

    companion object {
        fun errorFileFor(report: File) = File(report.parentFile, report.name.removeSuffix(".json") + ".error")

        fun from(activity: Activity): BenchRequest? {
            val extras = activity.intent
            val artifact = extras.getStringExtra("artifact") ?: return null
            val reportPath = extras.getStringExtra("report")
            val report = if (reportPath != null) {
                File(reportPath)
            } else {
                val stamp = SimpleDateFormat("yyyyMMdd'T'HHmmss'Z'", Locale.ROOT)
                    .apply { timeZone = TimeZone.getTimeZone("UTC") }
                    .format(Date())
                File(ArtifactStore.reportsFolder(activity), "${File(artifact).name}-$stamp.json")
            }
            return BenchRequest(
                artifact = File(artifact),
                report = report,
                runs = extras.getIntExtra("runs", 100).coerceAtLeast(1),
                warmup = extras.getIntExtra("warmup", 5).coerceAtLeast(0),
                threads = if (extras.hasExtra("threads")) extras.getIntExtra("threads", DEFAULT_THREADS) else null,
                sustainedSeconds = extras.getIntExtra("sustained_s", 0).coerceAtLeast(0),
                component = extras.getStringExtra("component"),
                fromAdb = reportPath != null,
            )
        }
    }
}

/** What one component's measurement gave, before the core turns it into a report row. */
class ComponentMeasurement(
    val component: Component,
    val runtime: dev.edgekit.demo.runtime.RuntimeDescription?,
    val loadMs: Double?,
    val firstInferenceMs: Double?,
    val warmupRuns: Int,
    /** Timed runs in order, or a uniform reservoir of them in sustained mode. */
    val samplesMs: List<Double>,
    val samplesTotal: Int,
    /** Sustained mode: the median of each window, so throttling shows as a rising series. */
    val windowMediansMs: List<Double>,
    /** Sustained mode: the thermal status at the end of each window (empty below API 29). */
    val windowThermalStates: List<String>,
    /** Sustained mode: how long the timed runs went on; null for a fixed number of runs. */
    val sustainedSeconds: Double?,
    val nativeHeapIncreaseBytes: Long?,
    val error: String?,
)

class BenchmarkRun(private val activity: Activity, private val request: BenchRequest) {
    fun execute(): String {
        val artifact = Artifact(request.artifact)
        val manifest = artifact.manifest
        dev.edgekit.demo.runtime.Runtimes.unsupportedReason(manifest.format)?.let { throw IllegalStateException(it) }
        val threads = request.threads ?: artifact.profileThreads
        val components = request.component?.let { listOf(manifest.component(it)) } ?: manifest.components
        val thermalStart = PhoneInfo.thermalStatus(activity)
        val measurements = components.map { measure(artifact, it, threads) }
        if (measurements.all { it.error != null }) {
            throw IllegalStateException(measurements.first().error)
        }
        val thermalEnd = PhoneInfo.thermalStatus(activity)
        val json = BenchReports.write(
            manifest = manifest,
            measurements = measurements,
            settings = BenchSettings(request, threads, thermalStart, thermalEnd),
        )
        BenchOutput.writeAtomically(request.report, json)
        return BenchReports.summary(measurements, thermalStart, thermalEnd) + "\n\nReport: ${request.report}"
    }

    private fun measure(artifact: Artifact, component: Component, threads: Int): ComponentMeasurement {
        val heapBefore = Debug.getNativeHeapAllocatedSize()
        var runtime: dev.edgekit.demo.runtime.RuntimeDescription? = null
        Log.i(LOG_TAG, "${component.name}: loading ${component.modelFile} with $threads threads")
        return try {
            var started = SystemClock.elapsedRealtimeNanos()
            artifact.open(component, threads).use { model ->
                runtime = model.description
                val loadMs = elapsedMs(started)
                val inputs = artifact.seededInputs(component)
                started = SystemClock.elapsedRealtimeNanos()
                model.run(inputs)
                val firstMs = elapsedMs(started)
                repeat(request.warmup) { model.run(inputs) }
                val timed = if (request.sustainedSeconds > 0) {
                    sustained(model, inputs)
                } else {
                    Timed(List(request.runs) { timeOnce(model, inputs) }, request.runs, emptyList(), emptyList(), null)
                }
                ComponentMeasurement(
                    component, runtime, loadMs, firstMs, request.warmup, timed.samplesMs, timed.total,
                    timed.windowMediansMs, timed.windowThermalStates, timed.seconds,
                    Debug.getNativeHeapAllocatedSize() - heapBefore,
                    error = null,
                )
            }
        } catch (error: Exception) {
            Log.e(LOG_TAG, "${component.name} failed", error)
            ComponentMeasurement(
                component, runtime, null, null, 0, emptyList(), 0, emptyList(), emptyList(), null, null,
                error = error.message ?: error.toString(),
            )
        }
    }

    private class Timed(
        val samplesMs: List<Double>,
        val total: Int,
        val windowMediansMs: List<Double>,
        val windowThermalStates: List<String>,
        val seconds: Double?,
    )

    /**
     * Timed runs for `sustained_s` seconds and at least `runs` of them: every run is timed; a
     * uniform reservoir of at most [MAX_SAMPLES] is kept (reservoir sampling, seeded), and each
     * window's median and the thermal status at its end recorded (`sustained` in the report).
     */
    private fun sustained(model: LoadedComponent, inputs: List<dev.edgekit.demo.runtime.InputValues>): Timed {
        val random = Random(0)
        val reservoir = ArrayList<Double>(MAX_SAMPLES)
        val windowMedians = ArrayList<Double>()
        val windowThermalStates = ArrayList<String>()
        val window = ArrayList<Double>()
        val windowNanos = (BenchReports.SUSTAINED_WINDOW_S * NANOS_PER_SECOND).toLong()
        val started = SystemClock.elapsedRealtimeNanos()
        val end = started + request.sustainedSeconds * NANOS_PER_SECOND
        var windowEnd = started + windowNanos
        var total = 0
        fun closeWindow() {
            windowMedians.add(median(window))
            PhoneInfo.thermalStatus(activity)?.let(windowThermalStates::add)
            window.clear()
        }
        while (SystemClock.elapsedRealtimeNanos() < end || total < request.runs) {
            val sample = timeOnce(model, inputs)
            total += 1
            if (reservoir.size < MAX_SAMPLES) {
                reservoir.add(sample)
            } else {
                val slot = random.nextInt(total)
                if (slot < MAX_SAMPLES) reservoir[slot] = sample
            }
            window.add(sample)
            if (SystemClock.elapsedRealtimeNanos() >= windowEnd) {
                closeWindow()
                windowEnd += windowNanos
            }
        }
        if (window.isNotEmpty()) closeWindow()
        return Timed(reservoir, total, windowMedians, windowThermalStates, elapsedMs(started) / 1000)
    }

    private fun timeOnce(model: LoadedComponent, inputs: List<dev.edgekit.demo.runtime.InputValues>): Double {
        val started = SystemClock.elapsedRealtimeNanos()
        model.run(inputs)
        return elapsedMs(started)
    }

    private fun elapsedMs(startedNanos: Long) = (SystemClock.elapsedRealtimeNanos() - startedNanos) / 1e6

    private fun median(values: List<Double>): Double = BenchStats.of(values).medianMs

    private companion object {
        const val MAX_SAMPLES = 1000
        const val NANOS_PER_SECOND = 1_000_000_000L
    }
}

/** The run's settings as the report's `settings` block records them. */
class BenchSettings(
    val request: BenchRequest,
    val threads: Int,
    val thermalStart: String?,
    val thermalEnd: String?,
)

object BenchOutput {
    /** Writes `<file>.partial`, then renames: edgekit never pulls a half-written file. */
    fun writeAtomically(file: File, text: String) {
        file.parentFile?.mkdirs()
        val partial = File(file.parentFile, file.name + ".partial")
        partial.writeText(text)
        if (!partial.renameTo(file)) {
            throw java.io.IOException("Could not rename $partial to $file.")
        }
    }
}
