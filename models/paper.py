"""Figures reported in He et al. 2016, kept as data for summaries, tests and the reproduction report."""

# Table 1: multiply-adds ("FLOPs" in the paper) at 224x224, in units of 1e9.
TABLE1_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}

# Table 6: CIFAR-10 ResNets, parameters (millions) and test error (%, best of 5 runs;
# ResNet-110 also reports mean 6.61 +- 0.16).
TABLE6_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
TABLE6_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
TABLE6_RESNET110_MEAN_STD = (6.61, 0.16)

# Tables 3-4: ImageNet val top-1 / top-5 error (%), 10-crop testing.
TABLE3_10CROP = {
    "plain34": (28.54, 10.02),
    "resnet34_A": (25.03, 7.76),
    "resnet34_B": (24.52, 7.46),
    "resnet34_C": (24.19, 7.40),
    "resnet50": (22.85, 6.71),
    "resnet101": (21.75, 6.05),
    "resnet152": (21.43, 5.71),
}

# Table 8 (via Table 7's setup): Faster R-CNN on COCO val, AP@0.5 / AP@[.5:.95] in %.
TABLE8_COCO = {"vgg16": (41.5, 21.2), "resnet101": (48.4, 27.2)}
