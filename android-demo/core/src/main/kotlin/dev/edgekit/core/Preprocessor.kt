package dev.edgekit.core

/** A float32 tensor, row-major in `shape`. */
class FloatTensor(val data: FloatArray, val shape: IntArray) {
    init {
        require(data.size == shape.fold(1) { n, d -> n * d }) {
            "FloatTensor: ${data.size} values do not fill shape ${shape.contentToString()}"
        }
    }
}

/**
 * Photo pixels -> the model's input tensor, from the manifest's preprocessing block alone.
 * The same steps as edgekit/preprocess.py, giving identical tensors:
 *   1. (the platform decodes the file, applies its EXIF orientation, converts to RGB8)
 *   2. resize the 8-bit image with Pillow's filter (PillowResample), shortest-edge sizes
 *      truncated as Hugging Face computes them;
 *   3. center crop, zero-padding an image smaller than the window;
 *   4. pixel * rescale_factor in double, rounded once to float;
 *   5. (x - mean) / std in float;
 *   6. channel order, then layout, with a batch axis of 1.
 */
class Preprocessor(val preprocessing: Preprocessing) {
    /** `rgb`: height x width x 3 bytes, row-major, upright. Returns (1, 3, H, W) for NCHW or
     * (1, H, W, 3) for NHWC. */
    fun run(rgb: ByteArray, height: Int, width: Int): FloatTensor {
        if (height < 1 || width < 1 || rgb.size != height * width * 3) {
            throw EdgekitCoreException(
                "Preprocessor: ${rgb.size} bytes is not a ${width}x$height RGB image " +
                    "(${height * width * 3} bytes). Hint: pass decoded RGB8 pixels, 3 bytes each.",
            )
        }
        val pre = preprocessing
        // 2. resize
        val (resizedHeight, resizedWidth) = resizedSize(height, width)
        val resized = if (pre.resize == ResizeRule.NONE) {
            rgb
        } else {
            PillowResample.resize(rgb, height, width, resizedHeight, resizedWidth, pre.interpolation)
        }
        // 3. crop
        val outHeight = pre.outputHeight
        val outWidth = pre.outputWidth
        val pixels = if (pre.crop == CropRule.CENTER) {
            centerCrop(resized, resizedHeight, resizedWidth, outHeight, outWidth)
        } else {
            resized
        }
        // 4.-6.
        val mean = FloatArray(3) { pre.mean[it].toFloat() }
        val std = FloatArray(3) { pre.std[it].toFloat() }
        val plane = outHeight * outWidth
        val data = FloatArray(plane * 3)
        for (i in 0 until plane) {
            for (rgbChannel in 0 until 3) {
                val value = ((pixels[i * 3 + rgbChannel].toInt() and 0xFF) * pre.rescaleFactor).toFloat()
                val normalized = (value - mean[rgbChannel]) / std[rgbChannel]
                val channel = if (pre.channelOrder == ChannelOrder.BGR) 2 - rgbChannel else rgbChannel
                val index = if (pre.layout == Layout.NCHW) channel * plane + i else i * 3 + channel
                data[index] = normalized
            }
        }
        val shape = if (pre.layout == Layout.NCHW) {
            intArrayOf(1, 3, outHeight, outWidth)
        } else {
            intArrayOf(1, outHeight, outWidth, 3)
        }
        return FloatTensor(data, shape)
    }

    /** (height, width) after the resize rule: shortest-edge sizes truncate, as in HF. */
    fun resizedSize(height: Int, width: Int): Pair<Int, Int> {
        val pre = preprocessing
        return when (pre.resize) {
            ResizeRule.EXACT -> pre.resizeHeight!! to pre.resizeWidth!!
            ResizeRule.NONE -> height to width
            ResizeRule.SHORTEST_EDGE -> {
                val size = pre.resizeShortestEdge!!
                val (short, long) = if (width <= height) width to height else height to width
                // Python's int(size * long / short): an exact product, a double division,
                // truncation.
                val newLong = ((size.toLong() * long).toDouble() / short).toInt()
                if (width <= height) newLong to size else size to newLong
            }
        }
    }

    companion object {
        /** A (height, width) window from the middle; offsets floor((H - h) / 2) like Python's
         * `//`, and an image smaller than the window is zero-padded first with ceil(gap / 2)
         * rows and columns on the top and left. */
        fun centerCrop(pixels: ByteArray, origHeight: Int, origWidth: Int, height: Int, width: Int): ByteArray {
            var top = Math.floorDiv(origHeight - height, 2)
            var left = Math.floorDiv(origWidth - width, 2)
            var source = pixels
            var sourceWidth = origWidth
            if (top < 0 || left < 0) {
                val paddedHeight = maxOf(height, origHeight)
                val paddedWidth = maxOf(width, origWidth)
                val padTop = (paddedHeight - origHeight + 1) / 2
                val padLeft = (paddedWidth - origWidth + 1) / 2
                val padded = ByteArray(paddedHeight * paddedWidth * 3)
                for (y in 0 until origHeight) {
                    System.arraycopy(
                        pixels, y * origWidth * 3,
                        padded, ((y + padTop) * paddedWidth + padLeft) * 3, origWidth * 3,
                    )
                }
                source = padded
                sourceWidth = paddedWidth
                top += padTop
                left += padLeft
            }
            val out = ByteArray(height * width * 3)
            for (y in 0 until height) {
                System.arraycopy(source, ((y + top) * sourceWidth + left) * 3, out, y * width * 3, width * 3)
            }
            return out
        }
    }
}
