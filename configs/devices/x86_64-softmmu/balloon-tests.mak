# Devices of the test-only build (build-fuzz): the two boards and what
# the qtests and the fuzz target use.  Every other device of the shipped
# build is left out: 14% of the build steps.

CONFIG_I440FX=y
CONFIG_Q35=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BALLOON=y
CONFIG_VIRTIO_BLK=y
CONFIG_SERIAL_ISA=y
