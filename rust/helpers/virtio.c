// SPDX-License-Identifier: GPL-2.0

#include <linux/virtio.h>
#include <linux/virtio_config.h>

__rust_helper bool rust_helper_virtio_has_feature(const struct virtio_device *vdev,
						  unsigned int fbit)
{
	return virtio_has_feature(vdev, fbit);
}

__rust_helper void rust_helper_virtio_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}

__rust_helper int rust_helper_virtio_find_vqs(struct virtio_device *vdev,
					      unsigned int nvqs,
					      struct virtqueue *vqs[],
					      struct virtqueue_info vqs_info[])
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, NULL);
}

__rust_helper void rust_helper_virtio_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

__rust_helper bool rust_helper_virtio_config_accessible(struct virtio_device *vdev)
{
	return !!vdev->config->get;
}

__rust_helper u8 rust_helper_virtio_cread8(struct virtio_device *vdev,
					   unsigned int offset)
{
	return virtio_cread8(vdev, offset);
}

__rust_helper u16 rust_helper_virtio_cread16(struct virtio_device *vdev,
					     unsigned int offset)
{
	return virtio_cread16(vdev, offset);
}

__rust_helper u32 rust_helper_virtio_cread32(struct virtio_device *vdev,
					     unsigned int offset)
{
	return virtio_cread32(vdev, offset);
}

__rust_helper void rust_helper_virtio_cwrite32(struct virtio_device *vdev,
					       unsigned int offset, u32 val)
{
	virtio_cwrite32(vdev, offset, val);
}

__rust_helper u16 rust_helper_cpu_to_virtio16(struct virtio_device *vdev, u16 val)
{
	return (__force u16)cpu_to_virtio16(vdev, val);
}

__rust_helper u32 rust_helper_cpu_to_virtio32(struct virtio_device *vdev, u32 val)
{
	return (__force u32)cpu_to_virtio32(vdev, val);
}

__rust_helper u16 rust_helper_virtio16_to_cpu(struct virtio_device *vdev, u16 val)
{
	return virtio16_to_cpu(vdev, (__force __virtio16)val);
}

__rust_helper u32 rust_helper_virtio32_to_cpu(struct virtio_device *vdev, u32 val)
{
	return virtio32_to_cpu(vdev, (__force __virtio32)val);
}

__rust_helper void rust_helper_virtio_synchronize_cbs(struct virtio_device *vdev)
{
	virtio_synchronize_cbs(vdev);
}

/*
 * Writes a 32-bit config field without might_sleep(): for paths that cannot sleep, such as a
 * kmsg dumper at panic time. Only for transports whose ->set does not sleep (virtio-pci and
 * virtio-mmio write registers).
 */
__rust_helper void rust_helper_virtio_cwrite32_atomic(struct virtio_device *vdev,
						      unsigned int offset, u32 val)
{
	__virtio32 v = cpu_to_virtio32(vdev, val);

	vdev->config->set(vdev, offset, &v, sizeof(v));
}
