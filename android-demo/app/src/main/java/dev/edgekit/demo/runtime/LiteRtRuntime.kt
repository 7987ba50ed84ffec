package dev.edgekit.demo.runtime

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import dev.edgekit.demo.BuildConfig
import java.io.File

/**
 * `.tflite` on LiteRT's CompiledModel API with the CPU accelerator (XNNPACK), as the
 * tflite-android target profile sets it up. litert-torch names signature tensors by position
 * (`args_N` in, `output_N` out; edgekit/exporters/tflite.py checks the same on the host), so
 * inputs and outputs are bound by those names, never by the order the signature lists them in
 * (`args_10` sorts before `args_2`).
 */
class LiteRtRuntime(modelFile: File, threads: Int, private val outputCount: Int) : InferenceRuntime {
    private val model: CompiledModel = CompiledModel.create(
        modelFile.absolutePath,
        CompiledModel.Options(Accelerator.CPU).apply {
            cpuOptions = CompiledModel.CpuOptions(numThreads = threads)
        },
    )
    private var inputBuffers: Map<String, TensorBuffer>? = null
    private val outputBuffers: Map<String, TensorBuffer> =
        (0 until outputCount).associate { "output_$it" to model.createOutputBuffer("output_$it") }

    override val description = RuntimeDescription("litert", BuildConfig.LITERT_VERSION, "xnnpack", threads)

    override fun run(inputs: List<ModelInput>): List<FloatArray> {
        // Buffers are created once and reused: allocating them per call would be timed too.
        val buffers = inputBuffers
            ?: inputs.indices.associate { "args_$it" to model.createInputBuffer("args_$it") }
                .also { inputBuffers = it }
        inputs.forEachIndexed { index, input ->
            val buffer = buffers.getValue("args_$index")
            when (val values = input.values) {
                is InputValues.Floats -> buffer.writeFloat(values.data)
                is InputValues.Ints -> buffer.writeInt(values.data)
            }
        }
        model.run(buffers, outputBuffers)
        return (0 until outputCount).map { outputBuffers.getValue("output_$it").readFloat() }
    }

    override fun close() {
        inputBuffers?.values?.forEach { it.close() }
        outputBuffers.values.forEach { it.close() }
        model.close()
    }
}
