// SPDX-License-Identifier: GPL-2.0

#include <linux/device.h>
#include <linux/string.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#if IS_ENABLED(CONFIG_VIRTIO_TEST_DEVICE)
#include <linux/virtio_test_device.h>
#endif

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

/*
 * Whether the transport reaches the config space at all: virtio-pci modern without a
 * device-config capability has neither ->get nor ->set.
 */
__rust_helper bool rust_helper_virtio_config_accessible(struct virtio_device *vdev)
{
	return vdev->config->get && vdev->config->set;
}

/*
 * Whether the transport's ->set is known never to sleep, so a config field may be written
 * from atomic context (a panic-time kmsg dumper).
 *
 * Decided by the driver bound to the transport device that is the virtio device's parent:
 * virtio-pci (legacy and modern) and virtio-mmio write device registers with iowrite/writeX
 * and take no lock. Every other transport is refused, the sleeping ones among them (vDPA's
 * ->set goes through the parent's ops and may take a mutex, CCW waits for a channel program,
 * UML sends a vhost-user message and waits for the answer); so is the fake test device unless
 * it is in its register-like mode. The ops tables of the two transports are static, so their
 * identity cannot be compared; their driver names are ABI (sysfs) and unique on the bus.
 */
__rust_helper bool rust_helper_virtio_config_set_atomic(struct virtio_device *vdev)
{
	struct device *parent = vdev->dev.parent;
	const char *name;

	if (!vdev->config->get || !vdev->config->set)
		return false;
#if IS_ENABLED(CONFIG_VIRTIO_TEST_DEVICE)
	if (virtio_test_device_set_is_atomic(vdev))
		return true;
#endif
	if (!parent || !parent->driver)
		return false;
	name = parent->driver->name;
	return !strcmp(name, "virtio-pci") || !strcmp(name, "virtio-mmio");
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
 * kmsg dumper at panic time. Only for devices for which rust_helper_virtio_config_set_atomic()
 * said yes.
 */
__rust_helper void rust_helper_virtio_cwrite32_atomic(struct virtio_device *vdev,
						      unsigned int offset, u32 val)
{
	__virtio32 v = cpu_to_virtio32(vdev, val);

	vdev->config->set(vdev, offset, &v, sizeof(v));
}
