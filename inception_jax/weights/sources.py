"""Where the two published GoogLeNet weight sets are downloaded from (by hand: see the README)."""

TORCHVISION_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"
BVLC_GOOGLENET_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
