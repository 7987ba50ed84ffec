package dev.edgekit.demo.runtime

import dev.edgekit.demo.BuildConfig
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * `.pte` on ExecuTorch's Android library. The program's XNNPACK delegate (lowered by edgekit)
 * runs the delegated ops; the thread count goes to XNNPACK's pool. The file is memory-mapped,
 * as ExecuTorch's own benchmark app loads it. Inputs are positional, in the manifest's order.
 */
class ExecuTorchRuntime(modelFile: File, threads: Int) : InferenceRuntime {
    private val module: Module = Module.load(modelFile.absolutePath, Module.LOAD_MODE_MMAP, threads)

    init {
        // Loading the method now puts its cost in load_ms rather than in the first inference.
        // Older releases return an error code here, newer ones throw: handle both.
        val status: Any = module.loadMethod("forward")
        if (status is Int && status != 0) {
            throw IllegalStateException("loading method 'forward' failed with ExecuTorch error 0x%x".format(status))
        }
    }

    override val description =
        RuntimeDescription("executorch", BuildConfig.EXECUTORCH_VERSION, "xnnpack", threads)

    override fun run(inputs: List<ModelInput>): List<FloatArray> {
        val values = inputs.map { input ->
            val tensor = when (val data = input.values) {
                is InputValues.Floats -> Tensor.fromBlob(data.data, input.shape)
                is InputValues.Ints -> Tensor.fromBlob(data.data, input.shape)
            }
            EValue.from(tensor)
        }
        return module.forward(*values.toTypedArray()).map { it.toTensor().getDataAsFloatArray() }
    }

    override fun close() {
        module.destroy()
    }
}
